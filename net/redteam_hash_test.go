package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// Red-team tests of the per-store hash algorithm on the wire and in a
// replica's first sync (flagFresh, tree.Store.Reinit). Each asserts the
// secure/correct behaviour. A test that names an "Attack" and an "Effect"
// describes the defect it found; every one is fixed and the test guards
// the fix.

const rtHashTok = "tok-rt-hash-0123456789"

// rtHookCtx runs hook at its first Err call: a deterministic point inside
// an operation that takes a context.
type rtHookCtx struct {
	context.Context
	once sync.Once
	hook func()
}

func (c *rtHookCtx) Err() error {
	c.once.Do(c.hook)
	return c.Context.Err()
}

// TestRedTeamHashFirstSyncUnderAWrite
//
// Promise: writes made while Sync runs stay local changes (arbor.DB.Sync),
// and a replica's first sync re-creates its store with the server's hash
// only while it holds nothing (Reinit). Attack (a careless user, no
// malice): an empty xxh3 replica writes a 9 KB value (tree.Store.Update:
// chunks and index stored in the open batch under xxh3 addresses) while
// its first sync against a blake3 server runs. The sync Reinits the store
// to blake3 (the open batch's writes are invisible to Reinit's scan) and
// then fails (here: the requested scope is outside the token's). The
// write's batch resumes and builds a blake3 leaf around the 16-byte xxh3
// reference; its commit succeeds (head was still unset). Effect: head is
// a node that does not decode; the value is lost (Get from the node cache
// even returns it as empty, without an error).
func TestRedTeamHashFirstSyncUnderAWrite(t *testing.T) {
	bg := context.Background()
	ts := startServerHash(t, smallChunks, node.BLAKE3, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: rtHashTok, ClientID: "rt", Read: scope.Prefixes([]byte("a/")), Write: scope.Prefixes([]byte("a/"))})
	})
	put(t, ts.store, 0, 20, 1)
	c := openStoreHash(t, t.TempDir(), smallChunks, node.XXH3)
	if _, err := c.Count(bg, c.EmptyRoot()); err != nil { // any read of the empty store
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 600)
	var syncErr error
	ctx := &rtHookCtx{Context: bg, hook: func() {
		o := ts.opts(rtHashTok)
		o.Scope = scope.Prefixes([]byte("z/"))
		_, syncErr = Sync(bg, c, o)
	}}
	_, err := c.Update(ctx, HeadRef, []tree.Edit{{Key: []byte("big"), Value: big}})
	t.Logf("sync during the write: %v; store hash now %s; write: %v", syncErr, c.Hash(), err)
	if err != nil {
		return // the write failed cleanly: acceptable
	}
	head, err := c.Root(HeadRef)
	if err != nil {
		t.Fatalf("head unreadable after a write that raced the first sync: %v", err)
	}
	if got, err := c.Get(bg, head, []byte("big")); err != nil || !bytes.Equal(got, big) {
		t.Errorf("acknowledged write lost: Get(big) = %d bytes, %v (want %d)", len(got), err, len(big))
	}
	if _, err := c.Verify(bg, head); err != nil {
		t.Errorf("replica head (store %s, head %s) does not verify: %v", c.Hash(), head.Short(), err)
	}
}

// TestRedTeamHashExplicitBLAKE3ReplicaNotDowngraded
//
// Promise (DESIGN, threat model): BLAKE3 is for replica holders and
// clients that do not trust the server; tree.Options.Hash / arbor --hash
// blake3 choose it. Attack (hostile or misconfigured server): serve an
// xxh3 store. A replica created explicitly with Hash: BLAKE3 but still
// empty sends flagFresh and silently Reinits itself to xxh3 — the server
// chose the weaker hash for it, and nothing tells the user (later opens
// with --hash blake3 then fail with ErrConfigMismatch). A client that
// asked for blake3 should refuse a server of another hash.
func TestRedTeamHashExplicitBLAKE3ReplicaNotDowngraded(t *testing.T) {
	ts := startServerHash(t, smallChunks, node.XXH3, nil)
	put(t, ts.store, 0, 20, 1)
	c := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	_, err := Sync(context.Background(), c, ts.opts(alice))
	if err == nil && c.Hash() != node.BLAKE3 {
		t.Fatalf("a replica created with Hash: BLAKE3 synced with an xxh3 server and is now %s, without an error", c.Hash())
	}
}

// TestRedTeamHashHelloFlagsAndAlgs: the server's hash/config check cannot
// be bypassed by a client that pushes or names a base, and an algorithm
// byte of 0 or 3 is refused unless the client adopts the server's. A
// fresh session then speaks the server's width: a push framed in xxh3
// width to a blake3 server is a protocol error, and stores nothing. Held.
func TestRedTeamHashHelloFlagsAndAlgs(t *testing.T) {
	ts := startServerHash(t, smallChunks, node.BLAKE3, nil)
	head := put(t, ts.store, 0, 20, 1)
	xbase := node.XXH3.Sum([]byte("some base"))
	refused := []struct {
		name string
		h    hello
	}{
		{"xxh3, no flags", hello{Token: alice, Config: smallChunks, Hash: node.XXH3}},
		{"alg 3", hello{Token: alice, Config: smallChunks, Hash: 3}},
		{"alg 0 on the wire", hello{Token: alice, Config: smallChunks, Hash: 0}},
		{"fresh and push", hello{Token: alice, Config: smallChunks, Hash: node.XXH3, Flags: flagFresh | flagPush}},
		{"fresh with a base", hello{Token: alice, Config: smallChunks, Hash: node.XXH3, Flags: flagFresh, Base: xbase}},
		{"fresh, other config and push", hello{Token: alice, Config: smallChunks2, Hash: node.BLAKE3, Flags: flagFresh | flagPush}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			qc := rawConn(t, ts, nil)
			st, err := qc.OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			p := tc.h.encode()
			if !tc.h.Hash.Valid() {
				// encode writes max(alg, xxh3) and no field for an
				// unknown one: encode as xxh3, then patch the byte.
				p = helloWithAlg(tc.h, byte(tc.h.Hash))
			}
			st.Write(appendFrame(nil, msgHello, p))
			st.Close()
			if code, ok := closeCode(waitClosed(t, qc)); !ok || code != codeConfig {
				t.Fatalf("close code %d (%v), want %d (config)", code, ok, codeConfig)
			}
		})
	}

	t.Run("fresh session pushes xxh3-width frames", func(t *testing.T) {
		qc := rawConn(t, ts, nil)
		w := rawHello(t, qc, hello{Token: alice, Config: smallChunks2, Hash: node.XXH3, Flags: flagFresh})
		if w.Hash != node.BLAKE3 || w.Root != head {
			t.Fatalf("welcome: %s %s", w.Hash, w.Root)
		}
		ex := openRawExchange(t, qc)
		for _, k := range []string{"key-000001", "key-000002"} {
			pc := pushChange{Key: []byte(k), HasFrom: true, From: valueHash(node.XXH3, node.InlineValue(val(1, 1))), Value: []byte("evil")}
			ex.send(msgPush, pc.encode(node.XXH3, nil))
		}
		ex.send(msgEnd, encodeEnd(2))
		ex.closeSend()
		_, err := ex.recv(msgPushDone)
		t.Logf("misframed push: %v", err)
		if err == nil {
			// A push the server parsed in its own width: whatever it
			// applied must be a well-formed change; the tree verifies.
			if _, err := ts.store.Verify(context.Background(), ref(t, ts.store, HeadRef)); err != nil {
				t.Fatalf("server tree after a misframed push: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrProtocol) {
			t.Logf("misframed push: %v", err)
		}
		if got := ref(t, ts.store, HeadRef); got != head {
			t.Fatalf("a refused misframed push moved the server's head")
		}
	})
}

// helloWithAlg encodes h as an xxh3 Hello whose algorithm byte is a.
func helloWithAlg(h hello, a byte) []byte {
	h.Hash = node.XXH3
	p := h.encode()
	p[len(p)-1-len(binary.AppendUvarint(nil, h.Caps))] = a
	return p
}

// TestRedTeamHashHostileWelcome: a lying server cannot make a fresh (or
// any) replica accept a malformed wide Welcome, an unknown algorithm, an
// invalid chunker config or a zero root; the replica's base never moves.
// Held unless a subtest fails.
func TestRedTeamHashHostileWelcome(t *testing.T) {
	wideNonZero := func(h hello) []byte {
		w := welcome{ClientID: "x", Root: node.BLAKE3.Sum([]byte("r")), Config: h.Config, Hash: node.BLAKE3}
		p := w.encode()
		p[1+1] ^= 1 // the 16-byte field, after the 1-byte client id "x" and its length
		return p
	}
	withAlg := func(a byte) func(h hello) []byte {
		return func(h hello) []byte {
			w := welcome{ClientID: "x", Root: node.XXH3.Sum([]byte("r")), Config: h.Config, Hash: node.XXH3}
			p := w.encode()
			// The algorithm byte precedes caps (one byte, 0) at the end.
			p[len(p)-2] = a
			return p
		}
	}
	badConfig := func(h hello) []byte {
		return welcome{ClientID: "x", Root: node.BLAKE3.Sum([]byte("r")), Config: chunker.Config{LeafFanout: 1, BranchFanout: 1, MaxBytes: 1}, Hash: node.BLAKE3}.encode()
	}
	zeroRoot := func(h hello) []byte {
		return welcome{ClientID: "x", Root: node.Hash{}, Config: h.Config, Hash: node.BLAKE3}.encode()
	}
	for _, tc := range []struct {
		name string
		msg  func(h hello) []byte
	}{
		{"blake3 welcome, non-zero 16-byte field", wideNonZero},
		{"algorithm 0", withAlg(0)},
		{"algorithm 3", withAlg(3)},
		{"invalid chunker config", badConfig},
		{"zero root", zeroRoot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, fp := fakeServer(t, func(qc *quic.Conn, h hello, ex *exchange) {
				ex.send(msgWelcome, tc.msg(h))
				ex.closeSend()
				// Answer any request with an empty leaf of blake3.
				for {
					st, err := qc.AcceptStream(context.Background())
					if err != nil {
						return
					}
					var cn counters
					sx := newExchange(st, &cn, 2*time.Second, DefaultMaxFrame, "c")
					if _, err := sx.recv(msgGetNodes, msgGetTree, msgGetBlobs); err != nil {
						return
					}
					sx.send(msgNode, node.EmptyLeaf(node.BLAKE3))
					sx.send(msgEnd, encodeEnd(1))
					sx.closeSend()
				}
			})
			c := openStoreHash(t, t.TempDir(), smallChunks, node.XXH3)
			opts := ClientOptions{Server: addr, Token: "t", Fingerprint: fp, IOTimeout: 500 * time.Millisecond}
			_, err := Sync(context.Background(), c, opts)
			t.Logf("sync: %v (store %s)", err, c.Hash())
			if err == nil {
				t.Fatalf("sync against a lying Welcome succeeded (store %s)", c.Hash())
			}
			if _, ok, _ := c.Ref(BaseRef); ok {
				t.Fatal("base moved")
			}
			if _, ok, _ := c.Ref(HeadRef); ok {
				t.Fatal("head moved")
			}
			if _, err := c.Refs(); err != nil {
				t.Fatalf("refs unreadable: %v", err)
			}
		})
	}
}
