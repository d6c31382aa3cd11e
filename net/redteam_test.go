package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// Red-team tests: each TestRedTeam<Defect> fails while the defect it names
// is present; TestRedTeamDefended<…> document attacks that were repelled.

// rtSession opens an authenticated raw session.
func rtSession(t *testing.T, ts *testServer, tok string, flags byte) (*quic.Conn, welcome) {
	t.Helper()
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	w := rawHello(t, qc, hello{Token: tok, Config: ts.store.Config(), Flags: flags})
	return qc, w
}

// rtPush sends one push exchange (changes in the order given, then End)
// and returns the server's answer.
func rtPush(t *testing.T, qc *quic.Conn, changes ...pushChange) (pushDone, error) {
	t.Helper()
	st, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		return pushDone{}, err
	}
	var c counters
	ex := newExchange(st, &c, 20*time.Second, DefaultMaxFrame, "test server")
	for _, ch := range changes {
		if err := ex.send(msgPush, ch.encode(node.XXH3, nil)); err != nil {
			return pushDone{}, err
		}
	}
	if err := ex.send(msgEnd, encodeEnd(uint64(len(changes)))); err != nil {
		return pushDone{}, err
	}
	if err := ex.closeSend(); err != nil {
		return pushDone{}, err
	}
	f, err := ex.recv(msgPushDone)
	if err != nil {
		return pushDone{}, err
	}
	return decodePushDone(node.XXH3, f.Payload)
}

func set(key string, value []byte) pushChange {
	return pushChange{Key: []byte(key), Value: value}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// firstChunk returns the address of the first chunk of out-of-line value v.
func firstChunk(v []byte) node.Hash {
	return node.XXH3.Sum(v[:chunker.SplitValue(v)[0]])
}

// TestRedTeamDefendedCollisionUnderAnotherKey (defended)
//
// Claim: "the server never holds two contents for one address"; threat
// model "cannot: replace stored content under another key through a
// collision".
// Attack: the server's store (opened as arbor serve opens it, without
// tree.Options.CheckAddresses) holds a under "shared/contract", a key the
// attacker may neither read nor write; the attacker, whose token may
// write only c/, pushes the colliding value b (xxh3Collision) under "c/x".
// Result: refused with ErrRefused (applyPush's batch turns the address
// check on); an honest clone still reads a. (Before 5140927 the push was
// accepted and the clone read b.)
func TestRedTeamDefendedCollisionUnderAnotherKey(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Read: scope.Prefixes([]byte("c/")), Write: scope.Prefixes([]byte("c/"))})
	})
	a, b := xxh3Collision(3000, randomBytes(3000, 7))
	edit(t, ts.store, tree.Edit{Key: []byte("shared/contract"), Value: a})

	qc, _ := rtSession(t, ts, carolTok, flagPush)
	_, err := rtPush(t, qc, set("c/x", b))

	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	got := get(t, c, ref(t, c, HeadRef), []byte("shared/contract"))
	if got == nil || !bytes.Equal([]byte(*got), a) {
		t.Fatalf("push of a colliding value under c/x: err=%v; an honest client now reads shared/contract as the attacker's bytes (equal to b: %v)",
			err, got != nil && bytes.Equal([]byte(*got), b))
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("push of a colliding value: %v, want ErrRefused", err)
	}
}

// TestRedTeamRefusedPushLeavesSpilledBlobs
//
// Claim: PROTOCOL "refusing content whose address is already stored with
// other bytes (code 10, nothing of the push stored)"; ErrRefused "Nothing
// of the push was stored"; "stores nothing of a change it will not apply".
// Attack: a push of 9 MiB of ordinary values followed (later in key
// order) by one value that collides with stored content.
// Effect: the push is refused with code 10, but applyPush stores values
// one by one in one tree.Batch, which commits what it holds to Pebble every
// 8 MiB (maybeSpill); the spilled chunks of the refused push's other
// values stay in the store (8 of 9 here), unreferenced until a GC. A
// tenant can repeat this to write up to MaxPushBytes per refused push.
func TestRedTeamRefusedPushLeavesSpilledBlobs(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	a, b := xxh3Collision(3000, randomBytes(3000, 11))
	edit(t, ts.store, tree.Edit{Key: []byte("shared/contract"), Value: a})

	var changes []pushChange
	var chunks []node.Hash
	for i := range 9 {
		v := randomBytes(1<<20, uint64(100+i))
		changes = append(changes, set(fmt.Sprintf("a/%d", i), v))
		chunks = append(chunks, firstChunk(v))
	}
	changes = append(changes, set("z", b))
	qc, _ := rtSession(t, ts, alice, flagPush)
	_, err := rtPush(t, qc, changes...)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("push with a colliding value: %v, want ErrRefused", err)
	}
	stored := 0
	for _, h := range chunks {
		if ok, _ := ts.store.HasBlob(h); ok {
			stored++
		}
	}
	if stored > 0 {
		t.Fatalf("push refused with %v, yet %d of its 9 values' first chunks are stored", err, stored)
	}
}

// TestRedTeamBlindWriteRootOracle
//
// Claim: "writes outside the read scope are blind: push answers reveal
// nothing of a value the token cannot read" (DESIGN: "It learns nothing
// from push answers about keys outside its read scope").
// Attack: a token that may write every key but read only c/ pushes its
// guess of "secret" and compares PushDone's root with Welcome's.
// Effect: a right guess is "the same value" (nothing applied, root
// unchanged); a wrong one is applied (root moves). The root in the push
// answer tells the guesser whether it was right (TestBlindWriteOutsideReadScope
// compares only the accepted counts).
func TestRedTeamBlindWriteRootOracle(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Read: scope.Prefixes([]byte("c/"))})
	})
	put(t, ts.store, 0, 40, 1)
	edit(t, ts.store, tree.Edit{Key: []byte("secret"), Value: []byte("hunter2")})
	unchanged := func(guess string) bool {
		qc, w := rtSession(t, ts, carolTok, flagPush)
		m, err := rtPush(t, qc, set("secret", []byte(guess)))
		if err != nil {
			t.Fatal(err)
		}
		return m.Root == w.Root
	}
	_ = unchanged
	// Defended: a token writes only inside its read scope, so the push is
	// refused whatever the guess.
	for _, guess := range []string{"hunter2", "letmein"} {
		qc, _ := rtSession(t, ts, carolTok, flagPush)
		if _, err := rtPush(t, qc, set("secret", []byte(guess))); !errors.Is(err, ErrForbiddenScope) {
			t.Fatalf("a push outside the read scope (guess %q): %v, want ErrForbiddenScope", guess, err)
		}
	}
}

// TestRedTeamRevokedSessionPushCommitsAfterSetTokens
//
// Claim: "SetTokens ends revoked (code 1) … sessions at once"; threat
// model "cannot: keep a session after its token is revoked".
// Attack: bob sends a complete push while another push holds the server's
// write lock (here alice's, held up in Validate); bob's token is then
// revoked and SetTokens returns, bob's connection closed.
// Effect: applyPush runs on the server's context, not the session's, and
// never looks at the session again: once the lock frees, the revoked
// token's write commits to the server's head.
func TestRedTeamRevokedSessionPushCommitsAfterSetTokens(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Validate = func(ctx context.Context, clientID string, key, value []byte, deleted bool) error {
			if string(key) == "alice/slow" {
				close(started)
				<-release
			}
			return nil
		}
	})
	aq, _ := rtSession(t, ts, alice, flagPush)
	aliceDone := make(chan error, 1)
	go func() {
		_, err := rtPush(t, aq, set("alice/slow", []byte("1")))
		aliceDone <- err
	}()
	<-started

	bq, _ := rtSession(t, ts, bob, flagPush)
	go rtPush(t, bq, set("bob/x", []byte("written by a revoked token")))
	time.Sleep(500 * time.Millisecond) // bob's push is buffered and waits for the write lock

	ts.srv.SetTokens(testTokens[:1]) // bob revoked
	if code, _ := closeCode(waitClosed(t, bq)); code != codeUnauthorized {
		t.Fatalf("bob's session closed with code %d, want %d", code, codeUnauthorized)
	}
	close(release)
	if err := <-aliceDone; err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), []byte("bob/x")); v != nil {
		t.Fatalf("after SetTokens revoked bob and closed his session, his write committed: bob/x = %q", *v)
	}
}

// TestRedTeamPushesPinEveryRootPastRetainAndMaxShown
//
// Claim: per-peer bounds — "hashes a session may still request: MaxShown
// … past it code 8"; the server keeps the newest Retain roots (DESIGN:
// resource bounds per peer).
// Attack: one session pushes again and again, each push overwriting one
// key with a new 2 KiB value, and never fetches anything. It never goes
// idle, so it may live as long as it likes.
// Effect: every push publishes its root to the session (session.publish):
// a requestable hash in sess.nodes, an entry in sess.published and a pin
// (sess.pinned, Server.pins), none bounded or checked against MaxShown.
// Every pinned root keeps its tree from GC: after 120 pushes with Retain 8,
// GC frees none of the overwritten values, and the per-session maps grow
// by one entry per push for the session's life.
func TestRedTeamPushesPinEveryRootPastRetainAndMaxShown(t *testing.T) {
	const maxShown, retain, pushes = 20, 8, 120
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.MaxShown = maxShown
		o.Retain = retain
	})
	qc, _ := rtSession(t, ts, alice, flagPush)
	var blobs []node.Hash
	var prev []byte
	for i := range pushes {
		v := randomBytes(2048, uint64(1000+i))
		blobs = append(blobs, firstChunk(v))
		c := set("k", v)
		if prev != nil {
			sv, _, _ := storedForm(node.XXH3, prev)
			c.HasFrom, c.From = true, valueHash(node.XXH3, sv)
		}
		m, err := rtPush(t, qc, c)
		if err != nil {
			t.Logf("push %d ended the session: %v", i, err)
			return
		}
		if m.Accepted != 1 {
			t.Fatalf("push %d not accepted", i)
		}
		prev = v
	}
	if _, err := ts.srv.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, h := range blobs {
		if ok, _ := ts.store.HasBlob(h); ok {
			kept++
		}
	}
	ts.srv.liveMu.Lock()
	var shown, published int
	for sess := range ts.srv.live {
		sess.mu.Lock()
		shown, published = len(sess.nodes)+len(sess.blobs), len(sess.published)
		sess.mu.Unlock()
	}
	ts.srv.liveMu.Unlock()
	if kept > 2*retain || shown > maxShown {
		t.Fatalf("after %d pushes on one session and a GC: %d of the %d overwritten values are still stored (Retain %d); the session may request %d hashes (MaxShown %d) and has %d published roots",
			pushes, kept, pushes, retain, shown, maxShown, published)
	}
}

// TestRedTeamAdoptDropsOutOfScopeRecordsUnreported
//
// Claim: "no silent loss on the client … with Adopt it takes the server's
// state and lists the local records it dropped or replaced
// (SyncResult.Discarded)".
// Attack (by a server that narrows the read scope, or a caller's Scope):
// a store with records and no base syncs with Adopt under a token whose
// read scope is a/; the store also holds b/1.
// Effect: noHistory and reportAdopted diff only within the synced scope,
// while the commit replaces the whole head: b/1 is gone from the store
// and not listed in Discarded (without Adopt, ErrNoSyncHistory counts
// only the in-scope records too).
func TestRedTeamAdoptDropsOutOfScopeRecordsUnreported(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Read: scope.Prefixes([]byte("a/"))})
	})
	edit(t, ts.store, tree.Edit{Key: []byte("a/0"), Value: []byte("server")})
	c := openStore(t, t.TempDir(), smallChunks)
	edit(t, c, tree.Edit{Key: []byte("a/1"), Value: []byte("local")}, tree.Edit{Key: []byte("b/1"), Value: []byte("local only")})
	opts := ts.opts(carolTok)
	opts.Adopt = true
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, d := range res.Discarded {
		listed = append(listed, string(d.Key))
	}
	if v := get(t, c, ref(t, c, HeadRef), []byte("b/1")); v == nil && !strings.Contains(strings.Join(listed, ","), "b/1") {
		t.Fatalf("b/1 was dropped from the store but Discarded lists only %v", listed)
	}
}

// TestRedTeamDiscardUnpushableFailsWithRootMismatch
//
// Claim: "unpushable changes … are discarded on request and reported".
// Attack: a full replica (retained path) of a token that may read every
// key but write only a/ holds local changes to a/1 and b/1 and syncs with
// DiscardUnpushable.
// Effect: the push leaves b/1 out, but pullChanges re-applies every local
// change base→head that was not overridden, b/1 included; the recomputed
// root differs from the server's, the sync walks the whole tree to repair
// and returns ErrRootMismatch (which the docs reserve for a corrupt store).
func TestRedTeamDiscardUnpushableFailsWithRootMismatch(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Write: scope.Prefixes([]byte("a/"))})
	})
	put(t, ts.store, 0, 30, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(carolTok))
	edit(t, c, tree.Edit{Key: []byte("a/1"), Value: []byte("mine")}, tree.Edit{Key: []byte("b/1"), Value: []byte("not mine")})
	opts := ts.opts(carolTok)
	opts.DiscardUnpushable = true
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		path := ""
		if res != nil {
			path = res.Path
		}
		t.Fatalf("sync with DiscardUnpushable: %v (path %q)", err, path)
	}
	if len(res.Discarded) != 1 || string(res.Discarded[0].Key) != "b/1" {
		t.Fatalf("discarded %v, want b/1", res.Discarded)
	}
}

// TestRedTeamIdleWatchersHoldTheGlobalMemoryBudget
//
// Claim: per-peer bounds — session and global memory budgets bound what
// peers hold (frameReader.grow charges buffers); "a peer that hoards
// memory gets an error rather than stalling others" (net/budget.go).
// Attack: a couple of sessions each open one valid Watch whose frame is
// ~15 MiB (120 copies of one range with 64 KiB keys, which normalise to
// a single range, well within MaxWatchRanges), then sit idle.
// Effect: the exchange's frame buffer, grown to hold the Watch frame, is
// released only when the exchange ends, and a Watch never ends (heartbeats
// keep it alive, and the session is never idle). Each watcher keeps ~15 MiB
// of the global budget for as long as it likes, so a handful of idle
// watchers (about 65 against the default 1 GiB) make every other session's
// pushes fail as "server busy".
func TestRedTeamIdleWatchersHoldTheGlobalMemoryBudget(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.MaxMemory = 40 << 20 })
	big := randomBytes(6<<20, 3)
	honestPush := func(key string) error {
		c := openStore(t, t.TempDir(), smallChunks)
		mustSync(t, c, ts.opts(bob))
		edit(t, c, tree.Edit{Key: []byte(key), Value: big})
		_, err := Sync(context.Background(), c, ts.opts(bob))
		return err
	}
	if err := honestPush("before"); err != nil {
		t.Fatalf("an honest 6 MiB push with no watchers: %v", err)
	}
	start, end := bytes.Repeat([]byte("a"), 64<<10-1), bytes.Repeat([]byte("b"), 64<<10-1)
	var rs []tree.Range
	for range 120 {
		rs = append(rs, tree.Range{Start: start, End: end})
	}
	payload := append([]byte{100, 1}, appendRawScope(rs)...)
	for range 2 {
		qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
		rawHello(t, qc, hello{Token: alice, Flags: flagAudit})
		ex := openRawExchange(t, qc)
		ex.send(msgWatch, payload)
		ex.closeSend()
		if _, err := ex.recv(msgRoot); err != nil {
			t.Fatalf("a valid Watch: %v", err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	held := ts.srv.mem.used.Load()
	if err := honestPush("after"); err != nil {
		t.Fatalf("two idle watchers hold %d bytes of the %d-byte global budget; an honest 6 MiB push now fails: %v", held, 40<<20, err)
	}
}

// appendRawScope encodes ranges as a wire scope without normalising them.
func appendRawScope(rs []tree.Range) []byte {
	b := binary.AppendUvarint(nil, uint64(len(rs)))
	for _, r := range rs {
		b = appendBytes(append(b, 1), r.Start)
		b = appendBytes(append(b, 1), r.End)
	}
	return b
}

// TestRedTeamEchoMapOutgrowsItsByteBound
//
// Claim: PROTOCOL's limits table — echo-suppression keys are bounded by
// "16 MiB of keys" (DESIGN: "byte bounds on the per-session
// echo-suppression and sent-node sets").
// Attack: one session pushes many records with 4-byte keys (all accepted).
// Effect: session.acceptedBytes counts only key bytes; each entry of
// sess.accepted (map[string]node.Hash) costs ~10× its key in map slots,
// string headers and key allocations, none of it charged to a memory
// budget. Kept until 4M entries (MaxShown), a session's echo map can hold
// ~200-300 MiB while "using" 16 MiB; here 600k keys (2.4 MB of key bytes)
// hold more than the whole 16 MiB bound.
func TestRedTeamEchoMapOutgrowsItsByteBound(t *testing.T) {
	ts := startServer(t, chunker.Config{}, nil)
	qc, _ := rtSession(t, ts, alice, flagPush)
	const pushes, per = 6, 100_000
	for p := range pushes {
		changes := make([]pushChange, per)
		for i := range changes {
			k := binary.BigEndian.AppendUint32(nil, uint32(p*per+i+1))
			changes[i] = pushChange{Key: k, Delete: true} // deleting a missing key: accepted, nothing stored
		}
		m, err := rtPush(t, qc, changes...)
		if err != nil {
			t.Fatal(err)
		}
		if m.Accepted != per {
			t.Fatalf("accepted %d of %d", m.Accepted, per)
		}
	}
	var sess *session
	ts.srv.liveMu.Lock()
	for s := range ts.srv.live {
		sess = s
	}
	ts.srv.liveMu.Unlock()
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	sess.mu.Lock()
	entries, keyBytes := len(sess.accepted), sess.acceptedBytes
	sess.mu.Unlock()
	before := heap()
	sess.mu.Lock()
	sess.accepted = map[string]node.Hash{} // measure what the map held
	sess.mu.Unlock()
	held := int64(before) - int64(heap())
	if held > maxAcceptedBytes {
		t.Fatalf("the echo map holds %d entries, %d key bytes by its count, and %d bytes of heap: over its %d-byte bound", entries, keyBytes, held, maxAcceptedBytes)
	}
}

// TestRedTeamWriteDuringNarrowingSyncVanishes
//
// Claim: "no silent loss on the client … writes made during a sync outside
// the new scope fail the commit instead of vanishing" (ff38e94; the
// commit's comment: "fail and keep it (the next sync pushes it)").
// Attack (a race, no hostile bytes needed): a replica narrows its scope
// from every key to a/; a write to z/50 (in the old scope) lands while
// Sync runs, after its commit moved base and head but before Sync's
// GCScope (here held off by a PreventGC hold for the few milliseconds the
// write takes; arbor.DB.Apply's cached scope admits such a write too).
// Effect: Sync returns nil; GCScope then deletes the nodes holding the
// write, so z/50 is gone from head without an error, and no later sync
// would push it (it is outside the stored scope).
func TestRedTeamWriteDuringNarrowingSyncVanishes(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	var edits []tree.Edit
	for i := range 10 {
		edits = append(edits, tree.Edit{Key: []byte(fmt.Sprintf("a/%d", i)), Value: []byte("x")})
	}
	for i := range 40 {
		edits = append(edits, tree.Edit{Key: []byte(fmt.Sprintf("z/%02d", i)), Value: []byte("x")})
	}
	edit(t, ts.store, edits...)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	oldBase := ref(t, c, BaseRef)
	edit(t, ts.store, tree.Edit{Key: []byte("a/0"), Value: []byte("y")}) // so that this sync moves base

	opts := ts.opts(alice)
	opts.Scope = scope.Prefixes([]byte("a/"))
	wrote := make(chan error, 1)
	opts.Progress = func(p Progress) {
		if p.Phase != "commit" {
			return
		}
		hold := c.PreventGC()
		go func() {
			defer hold()
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if b, _, _ := c.Ref(BaseRef); b != oldBase {
					break
				}
			}
			_, err := c.Update(context.Background(), HeadRef, []tree.Edit{{Key: []byte("z/50"), Value: []byte("written during the sync")}})
			wrote <- err
		}()
	}
	_, err := Sync(context.Background(), c, opts)
	if werr := <-wrote; werr != nil {
		t.Fatalf("the write during the sync failed: %v", werr)
	}
	if err != nil {
		t.Logf("sync reported: %v", err)
		return
	}
	if _, gerr := c.Get(context.Background(), ref(t, c, HeadRef), []byte("z/50")); gerr != nil {
		t.Fatalf("a write acknowledged during a narrowing sync vanished; the sync returned nil and head now gives: %v", gerr)
	}
}

// TestRedTeamExchangeWriteBuffersUncharged
//
// Claim: per-peer bounds — "bytes held for one session (frame buffers,
// buffered pushes)" are charged to MaxSessionMemory and MaxMemory.
// Attack: a few sessions each open their 16 streams and send nothing.
// Effect: newExchange allocates a 64 KiB bufio write buffer for every
// accepted stream before a byte is read, and no budget is charged for it
// (the read buffer, 4 KiB, is): 16 streams × MaxSessions (1024) hold 1 GiB
// outside MaxMemory, renewable every IOTimeout.
func TestRedTeamDefendedExchangeWriteBuffersCharged(t *testing.T) {
	const sessions, streams = 8, 16
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.MaxMemory = 2 << 20 })
	heap := func() int64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	var conns []*quic.Conn
	for range sessions {
		qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
		rawHello(t, qc, hello{Token: alice, Config: smallChunks})
		conns = append(conns, qc)
	}
	time.Sleep(200 * time.Millisecond)
	before := heap()
	for _, qc := range conns {
		for range streams {
			st, err := qc.OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			st.Write([]byte{ProtocolVersion}) // half a header: the server waits for the rest
		}
	}
	// Defended: each exchange's write buffer is charged with its read
	// buffer, so the 2 MiB budget admits about 30 idle exchanges and the
	// server refuses the rest (their sessions end as busy).
	time.Sleep(500 * time.Millisecond)
	grew := heap() - before
	if charged := ts.srv.mem.used.Load(); charged > 2<<20 || grew > 2*(2<<20)+(2<<20) {
		t.Fatalf("%d idle exchanges: server heap grew by %d bytes, %d charged to the budgets (MaxMemory %d)", sessions*streams, grew, charged, 2<<20)
	}
}

// TestRedTeamDefendedWatchOutsideReadScope (defended)
//
// Claim: "a Watch announces only moves that change its scope"; a partial
// token learns of the server's moves only through Welcome's root.
// Attack: a token that may read only a/ opens a Watch naming b/ (outside
// its read scope) with the shortest heartbeat, to learn when b/ changes.
// Result: the server intersects the Watch's scope with the read scope
// (empty here) and announces nothing after the first root, whatever b/
// does; heartbeats repeat the first root.
func TestRedTeamDefendedWatchOutsideReadScope(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "carol", Read: scope.Prefixes([]byte("a/"))})
	})
	edit(t, ts.store, tree.Edit{Key: []byte("a/1"), Value: []byte("x")}, tree.Edit{Key: []byte("b/1"), Value: []byte("0")})
	qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, qc, hello{Token: carolTok, Flags: flagAudit})
	ex := openRawExchange(t, qc)
	ex.send(msgWatch, encodeWatch(time.Millisecond, scope.Prefixes([]byte("b/"))))
	ex.closeSend()
	f, err := ex.recv(msgRoot)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := decodeRoot(node.XXH3, f.Payload)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := ts.store.Update(context.Background(), HeadRef, []tree.Edit{{Key: []byte("b/1"), Value: []byte(fmt.Sprint(i))}}); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-stopped }()
	for range 8 { // heartbeats every 100 ms
		f, err := ex.recv(msgRoot)
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := decodeRoot(node.XXH3, f.Payload); r != first {
			t.Fatalf("a Watch outside the read scope announced a move of b/: %s after %s", r.Short(), first.Short())
		}
	}
}

// TestRedTeamFollowRetriesNoSyncHistoryForever
//
// Claim: "a store with records and no base needs Adopt or Merge
// (ErrNoSyncHistory)"; Follow stops "on errors no retry fixes" (PROTOCOL,
// Watching).
// Attack: none needed — Follow (arbor sync --watch) on a store that holds
// records and has no base, with neither Adopt nor Merge.
// Effect: permanent() does not list ErrNoSyncHistory, so Follow retries
// the same failing sync forever (each attempt dials the server and walks
// its tree) instead of returning the error that tells the user to choose.
func TestRedTeamFollowRetriesNoSyncHistoryForever(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 20, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	edit(t, c, tree.Edit{Key: []byte("local"), Value: []byte("record")})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	attempts := 0
	err := Follow(ctx, c, ts.opts(alice), FollowOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnSync: func(_ *SyncResult, err error) {
			if errors.Is(err, ErrNoSyncHistory) {
				attempts++
			}
		}})
	if !errors.Is(err, ErrNoSyncHistory) {
		t.Fatalf("Follow returned %v after %d syncs that each failed with ErrNoSyncHistory; want it to stop with that error", err, attempts)
	}
}
