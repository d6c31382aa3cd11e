package net

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// records returns the records of the tree at root in s whose keys lie in sc,
// with values read in full.
func records(t testing.TB, s *tree.Store, root node.Hash, sc scope.Scope) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range sc.Ranges() {
		it := s.NewIterator(context.Background(), root, r)
		for it.Next() {
			v, err := s.ReadValue(context.Background(), it.Value())
			if err != nil {
				t.Fatalf("key %q: %v", it.Key(), err)
			}
			out[string(it.Key())] = string(v)
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterate %v: %v", r, err)
		}
		it.Close()
	}
	return out
}

func checkScoped(t testing.TB, ts *testServer, c *tree.Store, sc scope.Scope) {
	t.Helper()
	want := records(t, ts.store, ref(t, ts.store, HeadRef), sc)
	got := records(t, c, ref(t, c, HeadRef), sc)
	if len(got) != len(want) {
		t.Fatalf("scope %s: client holds %d records, server %d", sc, len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("scope %s: key %q: client %q, server %q", sc, k, got[k], v)
		}
	}
	if _, err := c.VerifyScope(context.Background(), ref(t, c, BaseRef), sc); err != nil {
		t.Fatalf("scope %s: %v", sc, err)
	}
}

func pfx(ps ...string) scope.Scope {
	var bs [][]byte
	for _, p := range ps {
		bs = append(bs, []byte(p))
	}
	return scope.Prefixes(bs...)
}

// TestScopedTokenACL: a token with a read scope gets only that scope's
// nodes and values, far fewer bytes than a clone, and a push outside its
// write scope is refused whole.
func TestScopedTokenACL(t *testing.T) {
	ctx := context.Background()
	big := strings.Repeat("x", 300)
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol",
			Read: pfx("key-0001", "key-0005"), Write: pfx("key-0001")})
	})
	var edits []tree.Edit
	for i := 0; i < 2000; i++ {
		edits = append(edits, tree.Edit{Key: rec(i), Value: []byte(fmt.Sprintf("%d-%s", i, big))})
	}
	edit(t, ts.store, edits...)

	full := openStore(t, t.TempDir(), smallChunks)
	fres := mustSync(t, full, ts.opts("tok-alice-0123456789"))

	c := openStore(t, t.TempDir(), smallChunks)
	res := mustSync(t, c, ts.opts("tok-carol-0123456789"))
	sc := pfx("key-0001", "key-0005")
	if !res.Scope.Equal(sc) {
		t.Fatalf("synced scope %s, want %s", res.Scope, sc)
	}
	checkScoped(t, ts, c, sc)
	if res.Pulled != 200 {
		t.Fatalf("pulled %d records, want 200", res.Pulled)
	}
	t.Logf("scoped clone of 200/2000 records: %d B received, %d B sent (full clone %d B received)",
		res.BytesReceived, res.BytesSent, fres.BytesReceived)
	// In scope: 200 records of ~310 bytes. Boundary leaves (4 per range
	// edge at most, fanout 4) and one spine per edge add a little.
	if res.BytesReceived > fres.BytesReceived/5 {
		t.Fatalf("scoped clone received %d bytes, full clone %d", res.BytesReceived, fres.BytesReceived)
	}
	// Out-of-scope records never reach the client, apart from the few in
	// boundary leaves.
	held := 0
	for i := 0; i < 2000; i++ {
		if v := get(t, c, ref(t, c, BaseRef), rec(i)); v != nil {
			held++
		}
	}
	if held > 200+4*8 {
		t.Fatalf("client can read %d records, scope holds 200", held)
	}

	// A small change in scope costs about the change, not the dataset.
	edit(t, ts.store, tree.Edit{Key: rec(150), Value: []byte("new")}, tree.Edit{Key: rec(1500), Value: []byte("out of scope")})
	res = mustSync(t, c, ts.opts("tok-carol-0123456789"))
	checkScoped(t, ts, c, sc)
	if res.Pulled != 1 {
		t.Fatalf("pulled %d, want 1", res.Pulled)
	}
	t.Logf("incremental scoped sync, 1 change in scope: %d B received, %d B sent, %d round trips", res.BytesReceived, res.BytesSent, res.RoundTrips)
	if res.BytesReceived > 8<<10 {
		t.Fatalf("incremental sync received %d bytes", res.BytesReceived)
	}

	// Write outside the write scope (but inside the read scope): refused.
	before := ref(t, ts.store, HeadRef)
	edit(t, c, tree.Edit{Key: rec(110), Value: []byte("mine")}, tree.Edit{Key: rec(510), Value: []byte("not mine")})
	_, err := Sync(ctx, c, ts.opts("tok-carol-0123456789"))
	if !errors.Is(err, ErrUnpushable) || !strings.Contains(err.Error(), "key-000510") {
		t.Fatalf("push outside write scope: err = %v, want ErrUnpushable naming the key", err)
	}
	if after := ref(t, ts.store, HeadRef); after != before {
		t.Fatal("refused push changed the server")
	}
	if v := get(t, c, ref(t, c, HeadRef), rec(510)); v == nil || *v != "not mine" {
		t.Fatal("the unpushable local write was not kept")
	}
	// Dropping it on purpose: the rest is pushed, the dropped write reported.
	opts := ts.opts("tok-carol-0123456789")
	opts.DiscardUnpushable = true
	res, err = Sync(ctx, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Discarded) != 1 || string(res.Discarded[0].Key) != string(rec(510)) || res.Accepted != 1 {
		t.Fatalf("discarded %v, accepted %d; want key-000510 discarded and 1 accepted", res.Discarded, res.Accepted)
	}
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(110)); v == nil || *v != "mine" {
		t.Fatal("the writable change was not pushed")
	}
	if v := get(t, c, ref(t, c, HeadRef), rec(510)); v != nil && *v == "not mine" {
		t.Fatal("the discarded write is still in the replica's head")
	}
}

// TestScopedNodeRequestRefused: the server does not serve a node outside
// the token's read scope even to a client that knows its hash.
func TestScopedNodeRequestRefused(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: pfx("key-0001")})
	})
	put(t, ts.store, 0, 1000, 1)
	root := ref(t, ts.store, HeadRef)
	rn, err := ts.store.Node(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	outside, _ := rn.Child(rn.Len() - 1) // holds key-000999: outside the scope
	cl, err := dial(context.Background(), ClientOptions{Server: ts.addr, Fingerprint: ts.fp, IOTimeout: 5e9, MaxFrame: DefaultMaxFrame},
		ts.fp, hello{Token: "tok-carol-0123456789", Flags: flagWalk, Config: smallChunks}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	if !cl.w.Read.Equal(pfx("key-0001")) {
		t.Fatalf("Welcome read scope %s", cl.w.Read)
	}
	sy := &syncer{cl: cl, opts: ClientOptions{IOTimeout: 5e9}}
	var got int
	err = sy.fetchNodes(context.Background(), []walkItem{{h: outside, level: rn.Level() - 1}}, func(r walkResult) { got += len(r.nodes) })
	if err == nil || !errors.Is(err, ErrProtocol) || got != 0 {
		t.Fatalf("out-of-scope node: err = %v and %d nodes, want refusal", err, got)
	}
}

// TestScopedTreeRequestRefused: a subtree stream is for sessions that may
// read every key; a scoped one is refused even a subtree it was shown.
func TestScopedTreeRequestRefused(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: pfx("key-0001")})
	})
	put(t, ts.store, 0, 1000, 1)
	root := ref(t, ts.store, HeadRef)
	rn, err := ts.store.Node(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	inside, _ := rn.Child(0) // holds key-000100: shown with the root
	for _, tok := range []string{"tok-carol-0123456789", alice} {
		cl, err := dial(context.Background(), ClientOptions{Server: ts.addr, Fingerprint: ts.fp, IOTimeout: 5e9, MaxFrame: DefaultMaxFrame},
			ts.fp, hello{Token: tok, Flags: flagWalk, Config: smallChunks}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sy := &syncer{cl: cl, opts: ClientOptions{IOTimeout: 5e9}}
		var got int
		err = sy.fetchTrees(context.Background(), []walkItem{{h: inside, level: rn.Level() - 1}}, func(r walkResult) error {
			got += len(r.nodes)
			return nil
		})
		cl.close()
		if tok == alice {
			// The same request from a session that reads everything.
			if err != nil || got < 2 {
				t.Fatalf("unscoped: err = %v, %d nodes", err, got)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "read scope") || got != 0 {
			t.Fatalf("scoped subtree request: err = %v and %d nodes, want refusal", err, got)
		}
	}
}

// TestValidateHook: the embedder's validation rejects one change with a
// reason that reaches the client; the other changes commit.
func TestValidateHook(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Validate = func(ctx context.Context, clientID string, key, value []byte, deleted bool) error {
			if string(value) == "bad" {
				return fmt.Errorf("client %s: value of %q must not be bad", clientID, key)
			}
			return nil
		}
	})
	put(t, ts.store, 0, 50, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	edit(t, c, tree.Edit{Key: rec(1), Value: []byte("good")}, tree.Edit{Key: rec(2), Value: []byte("bad")})
	res := mustSync(t, c, ts.opts(alice))
	if res.Accepted != 1 || len(res.Overridden) != 1 || string(res.Overridden[0].Key) != string(rec(2)) ||
		!strings.Contains(res.Overridden[0].Reason, "must not be bad") {
		t.Fatalf("result %+v", res)
	}
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(2)); v == nil || *v != string(val(2, 1)) {
		t.Fatalf("server rec(2) = %v", v)
	}
	if v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(1)); v == nil || *v != "good" {
		t.Fatalf("server rec(1) = %v", v)
	}
	checkConverged(t, ts, c)
}

// TestPartialSyncProperty: random datasets and random scopes, with writers
// inside and outside the scope on the server and local writes in scope; after
// every sync the replica's records equal the server's in scope, and the
// replica verifies against the server's root. The scope then widens.
func TestPartialSyncProperty(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			ts := startServer(t, smallChunks, nil)
			n := 300 + rng.IntN(700)
			put(t, ts.store, 0, n, 0)
			randScope := func() scope.Scope {
				var rs []tree.Range
				for range 1 + rng.IntN(3) {
					a := rng.IntN(n + 100)
					b := a + 1 + rng.IntN(200)
					rs = append(rs, tree.Range{Start: rec(a), End: rec(b)})
				}
				if rng.IntN(2) == 0 {
					rs = append(rs, tree.PrefixRange([]byte(fmt.Sprintf("key-000%d", rng.IntN(10)))))
				}
				return scope.New(rs...)
			}
			sc := randScope()
			c := openStore(t, t.TempDir(), smallChunks)
			opts := ts.opts(alice)
			opts.Scope = sc
			mustSync(t, c, opts)
			checkScoped(t, ts, c, sc)
			opts.Scope = scope.Scope{} // later syncs use the stored scope
			for round := range 6 {
				var wg sync.WaitGroup
				wg.Add(1)
				wrng := rand.New(rand.NewPCG(seed, uint64(round)))
				go func() { // a concurrent server-side writer, inside and outside the scope
					defer wg.Done()
					for range 5 {
						i := wrng.IntN(n + 100)
						if wrng.IntN(5) == 0 {
							// A run of deletes: moves node boundaries and
							// widens the intervals of unchanged neighbours.
							var dels []tree.Edit
							for j := i; j < i+30; j++ {
								dels = append(dels, tree.Edit{Key: rec(j), Delete: true})
							}
							edit(t, ts.store, dels...)
						} else if wrng.IntN(4) == 0 {
							edit(t, ts.store, tree.Edit{Key: rec(i), Delete: true})
						} else {
							edit(t, ts.store, tree.Edit{Key: rec(i), Value: []byte(fmt.Sprintf("s%d-%d", round, i))})
						}
					}
				}()
				// Local writes in scope.
				for range 3 {
					i := rng.IntN(n + 100)
					if sc.Contains(rec(i)) {
						edit(t, c, tree.Edit{Key: rec(i), Value: []byte(fmt.Sprintf("c%d-%d", round, i))})
					}
				}
				mustSync(t, c, opts)
				wg.Wait()
				res := mustSync(t, c, opts) // settles the concurrent writes
				if !res.Scope.Equal(sc) {
					t.Fatalf("round %d: scope %s, want %s", round, res.Scope, sc)
				}
				checkScoped(t, ts, c, sc)
			}
			// Widen: the added part arrives.
			wide := sc.Union(randScope())
			opts.Scope = wide
			res := mustSync(t, c, opts)
			checkScoped(t, ts, c, wide)
			t.Logf("widened %s → %s: %d records pulled, %d nodes fetched", sc, wide, res.Pulled, res.NodesFetched)
		})
	}
}

// TestPartialTamper: altering, dropping or adding a record in a partial
// replica's store makes scope verification fail, naming the scope.
func TestPartialTamper(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 500, 1)
	sc := pfx("key-0001")
	for _, how := range []string{"alter", "drop", "add"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			c := openStore(t, dir, smallChunks)
			opts := ts.opts(alice)
			opts.Scope = sc
			mustSync(t, c, opts)
			base := ref(t, c, BaseRef)
			if _, err := c.VerifyScope(context.Background(), base, sc); err != nil {
				t.Fatal(err)
			}
			// The leaf holding key-000150.
			n, err := c.Node(context.Background(), base)
			if err != nil {
				t.Fatal(err)
			}
			leaf := base
			for !n.IsLeaf() {
				leaf, _ = n.Child(min(n.Search(rec(150)), n.Len()-1))
				if n, err = c.Node(context.Background(), leaf); err != nil {
					t.Fatal(err)
				}
			}
			var ents []node.Entry
			for i := 0; i < n.Len(); i++ {
				e := n.Entry(i)
				switch {
				case how == "alter" && string(e.Key) == string(rec(150)):
					e.Payload = node.InlineValue([]byte("tampered")).AppendPayload(nil)
				case how == "drop" && string(e.Key) == string(rec(150)):
					continue
				}
				ents = append(ents, e)
				if how == "add" && string(e.Key) == string(rec(150)) {
					ents = append(ents, node.Entry{Key: append(rec(150), '+'), Payload: node.InlineValue([]byte("extra")).AppendPayload(nil)})
				}
			}
			c.Close()
			db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Set(append([]byte{'n'}, leaf.Bytes()...), node.Encode(node.XXH3, 0, ents), pebble.Sync); err != nil {
				t.Fatal(err)
			}
			db.Close()
			c = openStore(t, dir, smallChunks)
			defer c.Close()
			_, err = c.VerifyScope(context.Background(), base, sc)
			if !errors.Is(err, tree.ErrVerify) || !strings.Contains(err.Error(), `"key-0001"`) {
				t.Fatalf("err = %v, want ErrVerify naming the scope", err)
			}
		})
	}
}

// TestReadScopeShrinks: when the token's read scope shrinks, the next sync
// narrows the replica's scope and drops the records it may no longer read.
func TestReadScopeShrinks(t *testing.T) {
	tok := Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: pfx("key-0001", "key-0002")}
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Tokens = append(o.Tokens, tok) })
	put(t, ts.store, 0, 500, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts("tok-carol-0123456789")
	mustSync(t, c, opts)
	checkScoped(t, ts, c, pfx("key-0001", "key-0002"))
	if v := get(t, c, ref(t, c, BaseRef), rec(250)); v == nil {
		t.Fatal("rec(250) not held before the shrink")
	}
	tok.Read = pfx("key-0001")
	ts.srv.SetTokens(append(append([]Token(nil), testTokens...), tok))
	res := mustSync(t, c, opts)
	if !res.Scope.Equal(pfx("key-0001")) {
		t.Fatalf("scope after shrink %s", res.Scope)
	}
	checkScoped(t, ts, c, pfx("key-0001"))
	if sc, err := StoredScope(c); err != nil || !sc.Equal(pfx("key-0001")) {
		t.Fatalf("stored scope %s, %v", sc, err)
	}
	for i := 210; i < 290; i++ {
		if v := get(t, c, ref(t, c, BaseRef), rec(i)); v != nil {
			t.Fatalf("rec(%d) still readable after the read scope shrank", i)
		}
	}
	// Still a working replica.
	edit(t, ts.store, tree.Edit{Key: rec(120), Value: []byte("after")})
	mustSync(t, c, opts)
	checkScoped(t, ts, c, pfx("key-0001"))
}

// TestScopedWireBytes: with out-of-line values (here 8 KiB each, distinct),
// a scoped token receives the in-scope values and no other: the bytes
// received stay within the in-scope values plus a small per-node overhead.
func TestScopedWireBytes(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: pfx("key-00010")})
	})
	var edits []tree.Edit
	for i := 0; i < 400; i++ {
		v := []byte(strings.Repeat(fmt.Sprintf("%07d|", i), 1024)) // 8 KiB, out of line
		edits = append(edits, tree.Edit{Key: rec(i), Value: v})
	}
	edit(t, ts.store, edits...)
	c := openStore(t, t.TempDir(), smallChunks)
	res := mustSync(t, c, ts.opts("tok-carol-0123456789"))
	checkScoped(t, ts, c, pfx("key-00010"))
	inScope := 10 * 8192
	t.Logf("scoped clone, 10 of 400 values of 8 KiB in scope: %d B received (in-scope values %d B), %d B sent, %d nodes, %d blobs",
		res.BytesReceived, inScope, res.BytesSent, res.NodesFetched, res.BlobsFetched)
	if res.BytesReceived > int64(inScope)+8192/2 {
		t.Fatalf("received %d bytes: out-of-scope values reached the client", res.BytesReceived)
	}
	// Each out-of-scope value is absent from the client's store.
	for i := 0; i < 400; i++ {
		if i >= 100 && i < 110 {
			continue
		}
		sv, err := ts.store.GetValue(context.Background(), ref(t, ts.store, HeadRef), rec(i))
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.HasBlob(sv.Ref); ok {
			t.Fatalf("client holds the value of out-of-scope key %q", rec(i))
		}
	}
}

// TestPartialHeldNodeWidens: deleting the keys after a held node makes it
// the tree's right edge, so its last child's interval becomes unbounded and
// may now overlap the scope; the walk must fetch what the held node's
// pruned subtree lacks instead of trusting it.
func TestPartialHeldNodeWidens(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 500, 1)
	sc := scope.New(tree.Range{Start: rec(100), End: rec(110)}, tree.Range{Start: rec(900)})
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.Scope = sc
	mustSync(t, c, opts)
	checkScoped(t, ts, c, sc)
	// The level-1 node holding rec(105), and its last key.
	h := ref(t, ts.store, HeadRef)
	var last []byte
	for {
		n, err := ts.store.Node(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		if n.Level() == 1 {
			last = n.LastKey()
			break
		}
		h, _ = n.Child(min(n.Search(rec(105)), n.Len()-1))
	}
	var dels []tree.Edit
	for i := 0; i < 500; i++ {
		if string(rec(i)) > string(last) {
			dels = append(dels, tree.Edit{Key: rec(i), Delete: true})
		}
	}
	edit(t, ts.store, dels...)
	mustSync(t, c, opts)
	checkScoped(t, ts, c, sc)
}

// TestScopedBlobRequestRefused: the value of a key outside the read scope
// is refused even when the client names its hash and walked the leaf
// holding that key.
func TestScopedBlobRequestRefused(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: scope.New(tree.Range{Start: rec(0), End: rec(1)})})
	})
	big := strings.Repeat("y", 4096)
	edit(t, ts.store, tree.Edit{Key: rec(0), Value: []byte(big + "0")}, tree.Edit{Key: rec(1), Value: []byte(big + "1")})
	root := ref(t, ts.store, HeadRef)
	sv, err := ts.store.GetValue(context.Background(), root, rec(1)) // same leaf as rec(0), outside the scope
	if err != nil {
		t.Fatal(err)
	}
	cl, err := dial(context.Background(), ClientOptions{Server: ts.addr, Fingerprint: ts.fp, IOTimeout: 5e9, MaxFrame: DefaultMaxFrame},
		ts.fp, hello{Token: "tok-carol-0123456789", Flags: flagWalk, Config: smallChunks}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	if len(cl.w.RootNode) == 0 {
		t.Fatal("no root node in Welcome")
	}
	sy := &syncer{cl: cl, opts: ClientOptions{IOTimeout: 5e9}}
	err = sy.getBlobs(context.Background(), []node.Hash{sv.Ref}, func(node.Hash, []byte) error { return nil })
	if err == nil || !errors.Is(err, ErrProtocol) {
		t.Fatalf("out-of-scope value: err = %v, want refusal", err)
	}
}
