package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

func openStoreHash(t testing.TB, dir string, cfg chunker.Config, alg node.Alg) *tree.Store {
	t.Helper()
	s, err := tree.Open(dir, &tree.Options{Chunker: cfg, NoSync: true, CacheSize: 16 << 20, PebbleCacheSize: 8 << 20, Hash: alg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startServerHash(t testing.TB, cfg chunker.Config, alg node.Alg, mut func(*ServerOptions)) *testServer {
	t.Helper()
	dir := t.TempDir()
	st := openStoreHash(t, filepath.Join(dir, "data"), cfg, alg)
	ts, _ := serveStore(t, st, dir, mut)
	return ts
}

// TestBLAKE3SyncEndToEnd runs every sync path between a blake3 server and
// blake3 replicas: clone (with out-of-line values), pull of the retained
// path, push with a server-wins conflict, a forced walk and a partial
// replica. Every root is a 256-bit hash and the replicas converge.
func TestBLAKE3SyncEndToEnd(t *testing.T) {
	ctx := context.Background()
	ts := startServerHash(t, smallChunks, node.BLAKE3, nil)
	put(t, ts.store, 0, 300, 1)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // out of line: chunks and an index blob
	edit(t, ts.store, tree.Edit{Key: []byte("big"), Value: big})

	a := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	res := mustSync(t, a, ts.opts(alice))
	if res.ServerRoot.Alg() != node.BLAKE3 || len(res.ServerRoot.String()) != 64 {
		t.Fatalf("server root %s is not a blake3-256 hash", res.ServerRoot)
	}
	checkConverged(t, ts, a)
	if v := get(t, a, ref(t, a, HeadRef), []byte("big")); v == nil || *v != string(big) {
		t.Fatal("the out-of-line value did not arrive whole")
	}

	// A conflict: both change key 7; the server's value wins and is reported.
	edit(t, a, tree.Edit{Key: rec(7), Value: []byte("client")}, tree.Edit{Key: []byte("mine"), Value: []byte("m")})
	edit(t, ts.store, tree.Edit{Key: rec(7), Value: []byte("server")}, tree.Edit{Key: rec(8), Value: []byte("server8")})
	res = mustSync(t, a, ts.opts(alice))
	if len(res.Overridden) != 1 || string(res.Overridden[0].Key) != string(rec(7)) {
		t.Fatalf("overridden %+v, want key %s", res.Overridden, rec(7))
	}
	checkConverged(t, ts, a)
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), []byte("mine")); v == nil || *v != "m" {
		t.Fatal("the pushed record is not on the server")
	}

	// The retained-base path, then a forced walk.
	put(t, ts.store, 100, 140, 2)
	mustSync(t, a, ts.opts(alice))
	checkConverged(t, ts, a)
	put(t, ts.store, 140, 160, 3)
	o := ts.opts(alice)
	o.ForceWalk = true
	if res := mustSync(t, a, o); res.Path != "walk" {
		t.Fatalf("forced walk took path %q", res.Path)
	}
	checkConverged(t, ts, a)
	if rep, err := a.Verify(ctx, ref(t, a, HeadRef)); err != nil {
		t.Fatalf("verify: %v (%+v)", err, rep)
	}

	// A partial replica.
	p := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	o = ts.opts(alice)
	o.Scope = scope.Prefixes([]byte("key-0001"))
	mustSync(t, p, o)
	n, err := p.Count(ctx, ref(t, p, HeadRef))
	if err != nil || n == 0 {
		t.Fatalf("partial replica holds %d records (%v)", n, err)
	}
}

// TestHashMismatchFailsAtHandshake: a replica holding data of one hash and
// a server of the other fail at once, with both algorithms named, and the
// replica keeps its data and its hash.
func TestHashMismatchFailsAtHandshake(t *testing.T) {
	for _, tc := range []struct{ server, client node.Alg }{{node.BLAKE3, node.XXH3}, {node.XXH3, node.BLAKE3}} {
		t.Run(fmt.Sprintf("server %s, client %s", tc.server, tc.client), func(t *testing.T) {
			ts := startServerHash(t, smallChunks, tc.server, nil)
			put(t, ts.store, 0, 20, 1)
			c := openStoreHash(t, t.TempDir(), smallChunks, tc.client)
			before := edit(t, c, tree.Edit{Key: []byte("local"), Value: []byte("v")})
			o := ts.opts(alice)
			o.Merge = true
			_, err := Sync(context.Background(), c, o)
			if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), tc.server.String()) || !strings.Contains(err.Error(), tc.client.String()) {
				t.Fatalf("sync: %v, want ErrConfigMismatch naming %s and %s", err, tc.server, tc.client)
			}
			if c.Hash() != tc.client || ref(t, c, HeadRef) != before {
				t.Fatalf("the replica changed: hash %s, head %s", c.Hash(), ref(t, c, HeadRef))
			}
			// The audit reads the server's root whatever the hashes.
			root, err := Root(context.Background(), ts.opts(alice))
			if err != nil || root != ref(t, ts.store, HeadRef) {
				t.Fatalf("audit: %s, %v", root, err)
			}
		})
	}
}

// TestFirstSyncTakesServerHash: an empty replica (created with the default
// xxh3) clones a blake3 server and becomes a blake3 store.
func TestFirstSyncTakesServerHash(t *testing.T) {
	ts := startServerHash(t, smallChunks, node.BLAKE3, nil)
	put(t, ts.store, 0, 100, 1)
	dir := t.TempDir()
	c := openStore(t, dir, smallChunks)
	mustSync(t, c, ts.opts(alice))
	if c.Hash() != node.BLAKE3 {
		t.Fatalf("replica hash %s after cloning a blake3 server", c.Hash())
	}
	checkConverged(t, ts, c)
	c.Close()
	c = openStore(t, dir, smallChunks)
	if c.Hash() != node.BLAKE3 || ref(t, c, HeadRef) != ref(t, ts.store, HeadRef) {
		t.Fatalf("reopened replica: hash %s", c.Hash())
	}
	mustSync(t, c, ts.opts(alice))
}

// TestBLAKE3CollisionIsHarmless is the blake3 row of the threat model: the
// xxh3 collision pair that TestPushCollisionRefused refuses and
// TestEqualRootsDifferentRecordsWithXXH3 turns into equal roots is two
// different addresses under blake3, so both values are stored, both read
// back, and different records give different roots.
func TestBLAKE3CollisionIsHarmless(t *testing.T) {
	ts := startServerHash(t, smallChunks, node.BLAKE3, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: carolTok, ClientID: "mallory", Read: scope.Prefixes([]byte("t/")), Write: scope.Prefixes([]byte("t/"))})
	})
	rest := make([]byte, 2048)
	for i := range rest {
		rest[i] = byte(i * 7)
	}
	victim, forged := xxh3Collision(len(rest), rest)
	if node.XXH3.Sum(victim) != node.XXH3.Sum(forged) || node.BLAKE3.Sum(victim) == node.BLAKE3.Sum(forged) {
		t.Fatal("the pair is not an xxh3 collision, or collides under blake3")
	}
	edit(t, ts.store, tree.Edit{Key: []byte("shared/contract"), Value: victim})

	m := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	mustSync(t, m, ts.opts(carolTok))
	edit(t, m, tree.Edit{Key: []byte("t/x"), Value: forged})
	mustSync(t, m, ts.opts(carolTok))

	c := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	mustSync(t, c, ts.opts(alice))
	head := ref(t, c, HeadRef)
	if v := get(t, c, head, []byte("shared/contract")); v == nil || *v != string(victim) {
		t.Fatal("the victim's value changed")
	}
	if v := get(t, c, head, []byte("t/x")); v == nil || *v != string(forged) {
		t.Fatal("the tenant's value was not stored")
	}

	s1 := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	s2 := openStoreHash(t, t.TempDir(), smallChunks, node.BLAKE3)
	r1 := edit(t, s1, tree.Edit{Key: []byte("contract"), Value: victim})
	r2 := edit(t, s2, tree.Edit{Key: []byte("contract"), Value: forged})
	if r1 == r2 {
		t.Fatal("different records give one blake3 root")
	}
}

// TestWideHashHelloReadByXXH3OnlyPeer: a blake3 Hello keeps the layout an
// xxh3-only arbor/2 peer reads (16-byte base field, then the algorithm
// byte), so such a peer sees algorithm 2 and refuses it instead of
// misreading the message; the new decoder reads the whole 32-byte base.
func TestWideHashHelloReadByXXH3OnlyPeer(t *testing.T) {
	base := node.BLAKE3.Sum([]byte("base"))
	h := hello{Token: "tok", Base: base, Flags: flagWalk, Config: smallChunks.WithDefaults(), Hash: node.BLAKE3, Caps: 0}
	p := h.encode()

	// An xxh3-only arbor/2 decoder: token, 16-byte base, flags, config,
	// hash byte, caps, then ignores what follows.
	d := newDec(msgHello, node.XXH3, p)
	d.bytes("token", maxToken)
	old16 := d.hash("base root")
	flags := d.byte1("flags")
	cfg := decodeConfig(d)
	alg := d.byte1("hash algorithm")
	d.uvarint("capabilities")
	d.rest()
	if err := d.done(); err != nil || !old16.IsZero() || flags != flagWalk || cfg != smallChunks.WithDefaults() || alg != byte(node.BLAKE3) {
		t.Fatalf("xxh3-only reading: err %v, base %s, flags %d, config %+v, hash %d", err, old16, flags, cfg, alg)
	}

	got, err := decodeHello(p)
	if err != nil || got.Base != base || got.Hash != node.BLAKE3 || got.Flags != flagWalk {
		t.Fatalf("decodeHello: %+v, %v", got, err)
	}
	// A later revision's fields after the wide base are ignored.
	if got, err := decodeHello(binary.AppendUvarint(append([]byte{}, p...), 99)); err != nil || got.Base != base {
		t.Fatalf("with trailing fields: %+v, %v", got, err)
	}
	// A non-zero 16-byte field with a wide hash is malformed.
	bad := append([]byte{}, p...)
	bad[1+len("tok")] ^= 1
	if _, err := decodeHello(bad); !errors.Is(err, ErrProtocol) {
		t.Fatalf("non-zero narrow base with blake3: %v", err)
	}
	w := welcome{ClientID: "c", Root: base, Config: smallChunks.WithDefaults(), Hash: node.BLAKE3}
	if got, err := decodeWelcome(w.encode()); err != nil || got.Root != base || got.Hash != node.BLAKE3 {
		t.Fatalf("welcome: %+v, %v", got, err)
	}
}
