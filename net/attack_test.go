package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// Attacks by peers that choose every byte they send. Each test fails on a
// server without the bound it names, and checks that an honest client
// still syncs while the attack runs.

// honestSync clones the server into a fresh store and checks the result.
func honestSync(t *testing.T, ts *testServer, token string) {
	t.Helper()
	c := openStore(t, t.TempDir(), smallChunks)
	defer c.Close()
	if _, err := Sync(context.Background(), c, ts.opts(token)); err != nil {
		t.Fatalf("an honest client during the attack: %v", err)
	}
	checkConverged(t, ts, c)
}

// TestAttackFrameHeadersAllocateNothing: a frame header that declares
// 16 MiB makes the server allocate what arrives, not what is declared.
func TestAttackFrameHeadersAllocateNothing(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 50, 1)
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute, MaxIncomingStreams: 100})
	rawHello(t, qc, hello{Token: alice, Config: smallChunks})
	const streams = 16
	for range streams {
		st, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		hdr := []byte{ProtocolVersion, msgPush}
		hdr = binary.AppendUvarint(hdr, DefaultMaxFrame) // and never the payload
		st.Write(append(hdr, 1, 2, 3))
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	time.Sleep(300 * time.Millisecond) // let the server read every header
	if used := ts.srv.mem.used.Load(); used > streams*(frameReadSize+64<<10) {
		t.Fatalf("server holds %d bytes for %d frame headers: allocated on the header's word", used, streams)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Fatalf("heap grew by %d bytes for %d frame headers", grew, streams)
	}
	honestSync(t, ts, alice)
}

// TestAttackSessionMemoryBudget: stalled pushes on one connection hold at
// most the session's budget; past it the session is cut off as busy.
func TestAttackSessionMemoryBudget(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.MaxSessionMemory = 8 << 20
	})
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute, MaxIncomingStreams: 100})
	rawHello(t, qc, hello{Token: alice, Config: smallChunks})
	value := bytes.Repeat([]byte("v"), 1<<20)
	for i := range 16 {
		st, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			break // the server closed the session
		}
		// One 1 MiB change per stream, never ended: each push waits for more.
		c := pushChange{Key: []byte(fmt.Sprintf("k%02d", i)), Value: value}
		if _, err := st.Write(appendFrame(nil, msgPush, c.encode(node.XXH3, nil))); err != nil {
			break
		}
		if used := ts.srv.mem.used.Load(); used > 8<<20 {
			t.Fatalf("server holds %d bytes for one session (budget 8 MiB)", used)
		}
	}
	err := waitClosed(t, qc)
	if !strings.Contains(fmt.Sprint(err), "memory budget") {
		t.Fatalf("session closed with %v, want a memory budget error", err)
	}
	eventually(t, "the budget returned", func() bool { return ts.srv.mem.used.Load() == 0 })
	honestSync(t, ts, bob)
}

// TestAttackSlowHandshakes: connections that never finish their Hello hold
// handshake slots for HandshakeTimeout in total, however slowly they
// trickle bytes, and never the slots of authenticated sessions.
func TestAttackSlowHandshakes(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.MaxHandshakes = 3
		o.MaxSessions = 100
		o.HandshakeTimeout = 600 * time.Millisecond
	})
	put(t, ts.store, 0, 20, 1)
	// Authenticated sessions do not take handshake slots.
	for range 4 {
		rawHello(t, rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute}), hello{Token: alice, Config: smallChunks})
	}
	hello := appendFrame(nil, msgHello, hello{Token: alice, Config: smallChunks}.encode())
	var slow []*quic.Conn
	for range 3 {
		qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 100 * time.Millisecond})
		st, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, qc)
		go func() {
			for _, b := range hello { // one byte every 100 ms: each read is quick
				if _, err := st.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := Root(context.Background(), ts.opts(bob)); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("with every handshake slot taken: %v, want server busy", err)
	}
	start := time.Now()
	for _, qc := range slow {
		err := waitClosed(t, qc)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("a trickling handshake held its slot for %v (timeout 600ms): %v", took, err)
		}
	}
	honestSync(t, ts, bob)
}

// TestAttackPushScopeCheckedAsKeysArrive: a push's first forbidden key ends
// it at once, before the client has sent (or the server buffered) the rest.
func TestAttackPushScopeCheckedAsKeysArrive(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Write: scope.Prefixes([]byte("c/"))})
	})
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, qc, hello{Token: carolTok, Config: smallChunks})
	ex := openRawExchange(t, qc)
	ex.send(msgPush, pushChange{Key: []byte("shared/x"), Value: []byte("mine")}.encode(node.XXH3, nil))
	ex.flush()
	// No End: the server must answer without waiting for it.
	_, err := ex.recv(msgPushDone)
	if !errors.Is(err, ErrForbiddenScope) || !strings.Contains(err.Error(), "shared/x") {
		t.Fatalf("got %v, want a refusal naming the key before the push ended", err)
	}
}

// TestAttackWatchBounds: a Watch names at most MaxWatchRanges ranges, and a
// session holds one Watch at a time.
func TestAttackWatchBounds(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.MaxWatchRanges = 8 })
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, qc, hello{Token: alice, Config: smallChunks})
	var ps [][]byte
	for i := range 100 {
		ps = append(ps, []byte(fmt.Sprintf("p%03d/", i)))
	}
	ex := openRawExchange(t, qc)
	ex.send(msgWatch, encodeWatch(time.Second, scope.Prefixes(ps...)))
	ex.closeSend()
	if _, err := ex.recv(msgRoot); err == nil || !strings.Contains(err.Error(), "100 ranges") {
		t.Fatalf("a Watch of 100 ranges: %v, want refused", err)
	}

	qc = rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, qc, hello{Token: alice, Config: smallChunks})
	first := openRawExchange(t, qc)
	first.send(msgWatch, encodeWatch(time.Second, scope.Prefixes([]byte("a/"))))
	first.closeSend()
	if _, err := first.recv(msgRoot); err != nil {
		t.Fatal(err)
	}
	second := openRawExchange(t, qc)
	second.send(msgWatch, encodeWatch(time.Second, scope.Prefixes([]byte("b/"))))
	second.closeSend()
	if _, err := second.recv(msgRoot); err == nil || !strings.Contains(err.Error(), "one Watch") {
		t.Fatalf("a second Watch on one session: %v, want refused", err)
	}
}

func openRawExchange(t *testing.T, qc *quic.Conn) *exchange {
	t.Helper()
	st, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var c counters
	return newExchange(st, &c, 5*time.Second, DefaultMaxFrame, "test server")
}

// TestRevokedTokenEndsLiveSession: SetTokens (SIGHUP in arbor serve) ends
// the live sessions of a revoked or narrowed token within a second, and
// leaves the others alone.
func TestRevokedTokenEndsLiveSession(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	watchers := map[string]chan error{}
	for _, tok := range []string{alice, bob} {
		done := make(chan error, 1)
		watchers[tok] = done
		reported := make(chan struct{}, 1)
		go func() {
			done <- Watch(context.Background(), ts.opts(tok), func(node.Hash) error {
				select {
				case reported <- struct{}{}:
				default:
				}
				return nil
			})
		}()
		select {
		case <-reported:
		case <-time.After(10 * time.Second):
			t.Fatal("no watch report")
		}
	}
	// Bob is narrowed, alice kept as she was.
	ts.srv.SetTokens([]Token{testTokens[0], {Token: bob, ClientID: "bob", Write: scope.Prefixes([]byte("b/"))}})
	select {
	case err := <-watchers[bob]:
		if err == nil || errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "grant changed") {
			t.Fatalf("bob's watch ended with %v, want a transient \"grant changed\" error", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a narrowed token's session outlived SetTokens by a second")
	}
	select {
	case err := <-watchers[alice]:
		t.Fatalf("alice's unchanged token lost its session: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// A push from a session whose token is then revoked.
	ts.srv.SetTokens(testTokens[1:])
	select {
	case err := <-watchers[alice]:
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("alice's watch ended with %v, want ErrUnauthorized", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a revoked token's session outlived SetTokens by a second")
	}
	c := openStore(t, t.TempDir(), smallChunks)
	edit(t, c, tree.Edit{Key: []byte("k"), Value: []byte("v")})
	if _, err := Sync(context.Background(), c, ts.opts(alice)); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a revoked token syncs: %v", err)
	}
}

// TestNoWriteOutsideReadScope: a token writes only inside its read scope
// (an explicit write= outside it is refused by the tokens file; a Token
// given in code is narrowed), so no push answer can depend on a value the
// token may not read.
func TestNoWriteOutsideReadScope(t *testing.T) {
	if _, err := ParseTokens([]byte("tok-x-0123456789ab x read=a/ write=b/\n")); err == nil || !strings.Contains(err.Error(), "not inside the read scope") {
		t.Fatalf("a write scope outside the read scope: %v, want refused", err)
	}
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Read: scope.Prefixes([]byte("c/"))})
	})
	edit(t, ts.store, tree.Edit{Key: []byte("secret"), Value: []byte("hunter2")})
	for _, guess := range []string{"hunter2", "letmein"} {
		qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
		rawHello(t, qc, hello{Token: carolTok, Config: smallChunks, Flags: flagPush})
		ex := openRawExchange(t, qc)
		from := valueHash(node.XXH3, node.InlineValue([]byte(guess)))
		ex.send(msgPush, pushChange{Key: []byte("secret"), HasFrom: true, From: from, Value: []byte(guess)}.encode(node.XXH3, nil))
		ex.send(msgEnd, encodeEnd(1))
		ex.closeSend()
		if _, err := ex.recv(msgPushDone); !errors.Is(err, ErrForbiddenScope) {
			t.Fatalf("guess %q: %v, want the push refused (ErrForbiddenScope)", guess, err)
		}
	}
}

const carolTok = "tok-carol-0123456789"

// TestPushStoresNothingItDoesNotApply: the blobs of an overridden change
// and of one Validate rejects are never written; Validate also sees a
// change equal to the server's value.
func TestPushStoresNothingItDoesNotApply(t *testing.T) {
	var mu sync.Mutex // the hook runs on the server's goroutines
	var validated []string
	seen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), validated...)
	}
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Validate = func(ctx context.Context, clientID string, key, value []byte, deleted bool) error {
			mu.Lock()
			validated = append(validated, string(key))
			mu.Unlock()
			if strings.HasPrefix(string(key), "bad/") {
				return errors.New("bad/ is read-only")
			}
			return nil
		}
	})
	edit(t, ts.store, tree.Edit{Key: []byte("same"), Value: []byte("equal")}, tree.Edit{Key: []byte("x"), Value: []byte("server")})
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	edit(t, ts.store, tree.Edit{Key: []byte("x"), Value: []byte("server 2")}) // our change of x will lose
	big := func(s string) []byte { return bytes.Repeat([]byte(s), 3000) }
	edit(t, c, tree.Edit{Key: []byte("bad/1"), Value: big("r")}, tree.Edit{Key: []byte("x"), Value: big("o")},
		tree.Edit{Key: []byte("good"), Value: big("g")})
	res := mustSync(t, c, ts.opts(alice))
	if len(res.Overridden) != 2 {
		t.Fatalf("overridden %v, want bad/1 and x", res.Overridden)
	}
	for _, v := range [][]byte{big("r"), big("o")} {
		if ok, err := ts.store.HasBlob(node.XXH3.Sum(v)); err != nil || ok {
			t.Fatalf("the blob of a change not applied is stored (%v, %v)", ok, err)
		}
	}
	if ok, _ := ts.store.HasBlob(node.XXH3.Sum(big("g"))); !ok {
		t.Fatal("the applied change's blob is missing")
	}
	if v := seen(); !strings.Contains(strings.Join(v, ","), "good") {
		t.Fatalf("validated %v", v)
	}
	// A change whose value the server already holds (an earlier push that
	// lost its reply) is validated too.
	mu.Lock()
	validated = nil
	mu.Unlock()
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, qc, hello{Token: alice, Config: smallChunks, Flags: flagPush})
	ex := openRawExchange(t, qc)
	ex.send(msgPush, pushChange{Key: []byte("same"), HasFrom: true, From: valueHash(node.XXH3, node.InlineValue([]byte("older"))), Value: []byte("equal")}.encode(node.XXH3, nil))
	ex.send(msgEnd, encodeEnd(1))
	ex.closeSend()
	if _, err := ex.recv(msgPushDone); err != nil {
		t.Fatal(err)
	}
	if v := seen(); len(v) != 1 || v[0] != "same" {
		t.Fatalf("validated %v, want [same]", v)
	}
}
