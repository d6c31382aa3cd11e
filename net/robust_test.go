package net

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// reachable returns every node hash of the tree at root in s.
func reachable(t testing.TB, s *tree.Store, root node.Hash) []node.Hash {
	t.Helper()
	var out []node.Hash
	stack := []node.Hash{root}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		out = append(out, h)
		n, err := s.Node(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; !n.IsLeaf() && i < n.Len(); i++ {
			c, _ := n.Child(i)
			stack = append(stack, c)
		}
	}
	return out
}

func countHeld(t testing.TB, c *tree.Store, hs []node.Hash) int {
	n := 0
	for _, h := range hs {
		if ok, err := c.HasNode(h); err != nil {
			t.Fatal(err)
		} else if ok {
			n++
		}
	}
	return n
}

// TestInterruptedWalkResumes: a clone cancelled part way (the client is
// killed) leaves the store at its old state; the next sync, after reopening
// the store, fetches exactly the nodes the client does not hold.
func TestInterruptedWalkResumes(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 3000, 1)
	all := reachable(t, ts.store, ref(t, ts.store, HeadRef))
	dir := t.TempDir()
	c := openStore(t, dir, smallChunks)
	put(t, c, 5000, 5001, 9) // a local write, pending its first sync

	for _, stopAt := range []int64{50, 400} {
		ctx, cancel := context.WithCancel(context.Background())
		opts := ts.opts(alice)
		opts.Merge = true // the local write goes up with the first sync
		opts.BatchNodes, opts.Parallel = 16, 2
		opts.Progress = func(p Progress) {
			if p.Phase == "walk" && p.Nodes >= stopAt {
				cancel()
			}
		}
		head := ref(t, c, HeadRef)
		_, err := Sync(ctx, c, opts)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted sync: err = %v", err)
		}
		if _, ok, _ := c.Ref(BaseRef); ok {
			t.Fatal("interrupted sync moved base")
		}
		if ref(t, c, HeadRef) != head {
			t.Fatal("interrupted sync moved head")
		}
		if _, err := c.Verify(context.Background(), head); err != nil {
			t.Fatalf("old state damaged: %v", err)
		}
	}
	c.Close()
	c = openStore(t, dir, smallChunks)
	defer c.Close()
	// The local write was pushed by the first attempt, so the server root
	// the next sync walks is the one after that push.
	target := ref(t, ts.store, HeadRef)
	all = reachable(t, ts.store, target)
	held := countHeld(t, c, all)
	if held == 0 {
		t.Fatal("interrupted walks kept nothing")
	}
	mopts := ts.opts(alice)
	mopts.Merge = true
	res := mustSync(t, c, mopts)
	if res.NodesFetched != len(all)-held {
		t.Fatalf("resumed walk fetched %d nodes; %d in tree, %d held", res.NodesFetched, len(all), held)
	}
	checkConverged(t, ts, c)
}

// TestServerDropsMidWalk: the server goes away during a walk; a restarted
// server on the same store completes the sync. The walk goes node by node
// in small requests, so that the server stops in its middle: streamed
// whole, this small tree would be in the client's receive window before
// the server stopped (TestKilledClientResumes interrupts streamed clones).
func TestServerDropsMidWalk(t *testing.T) {
	walkStreams = false
	defer func() { walkStreams = true }()
	dir := t.TempDir()
	st := openStore(t, dir+"/data", smallChunks)
	defer st.Close()
	ts, stop := serveStore(t, st, dir, nil)
	put(t, st, 0, 2000, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.BatchNodes, opts.Parallel = 16, 1
	var stopped atomic.Bool
	opts.Progress = func(p Progress) {
		if p.Phase == "walk" && p.Nodes >= 100 && !stopped.Swap(true) {
			go stop()
		}
	}
	if _, err := Sync(context.Background(), c, opts); err == nil {
		t.Fatal("sync survived the server's shutdown")
	}
	ts2, _ := serveStore(t, st, dir, nil)
	res := mustSync(t, c, ts2.opts(alice))
	if res.Path != "walk" {
		t.Fatalf("path %q", res.Path)
	}
	checkConverged(t, ts2, c)
}

// TestPushReplyLost: the connection drops after the server committed a
// push but before the client saw the reply. The next sync re-sends the
// changes; they count as accepted (not overridden) and nothing is lost.
func TestPushReplyLost(t *testing.T) {
	var drop atomic.Bool
	drop.Store(true)
	ts := startServer(t, smallChunks, nil)
	ts.srv.afterPush = func(sess *session, _ node.Hash, _ []pushChange, _ []uint64) {
		if drop.Swap(false) {
			sess.qc.CloseWithError(0, "test: drop before reply")
		}
	}
	put(t, ts.store, 0, 100, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	edit(t, c, tree.Edit{Key: rec(1), Value: []byte("mine")}, tree.Edit{Key: rec(2), Delete: true})
	if _, err := Sync(context.Background(), c, ts.opts(alice)); err == nil {
		t.Fatal("sync with lost reply succeeded")
	}
	res := mustSync(t, c, ts.opts(alice))
	if res.Pushed != 2 || res.Accepted != 2 || len(res.Overridden) != 0 {
		t.Fatalf("retry: %+v", res)
	}
	checkConverged(t, ts, c)
	root := ref(t, ts.store, HeadRef)
	if v := get(t, ts.store, root, rec(1)); v == nil || *v != "mine" {
		t.Fatalf("rec 1 = %v", v)
	}
}

// TestWritesDuringSyncKept: local writes made while a sync runs stay local
// changes: head = new base + those writes, pushed by the next sync.
func TestWritesDuringSyncKept(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 1000, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.BatchNodes = 8
	var wrote atomic.Bool
	opts.Progress = func(p Progress) {
		if p.Phase == "walk" && !wrote.Swap(true) {
			edit(t, c, tree.Edit{Key: []byte("during"), Value: []byte("sync")})
		}
	}
	res := mustSync(t, c, opts)
	if !wrote.Load() {
		t.Fatal("no write during sync")
	}
	base, head := ref(t, c, BaseRef), ref(t, c, HeadRef)
	if base != res.ServerRoot || head == base {
		t.Fatalf("base %s head %s server %s", base.Short(), head.Short(), res.ServerRoot.Short())
	}
	if v := get(t, c, head, []byte("during")); v == nil || *v != "sync" {
		t.Fatal("write made during sync lost")
	}
	if n, _ := c.Count(context.Background(), head); n != 1001 {
		t.Fatalf("head holds %d records", n)
	}
	res = mustSync(t, c, ts.opts(alice))
	if res.Accepted != 1 {
		t.Fatalf("next sync: %+v", res)
	}
	checkConverged(t, ts, c)
}

// TestConcurrentClientsConverge: 20 clients make random overlapping edits
// and sync concurrently, repeatedly. The server's final state equals the
// replay of every accepted change in commit order (no accepted write is
// lost, no rejected one applied); every conflict resolves to the server's
// value; and every client converges to the server's root.
func TestConcurrentClientsConverge(t *testing.T) {
	const clients = 20
	rounds := 5
	if testing.Short() {
		rounds = 3
	}
	var toks []Token
	for i := range clients {
		toks = append(toks, Token{Token: fmt.Sprintf("token-%02d", i), ClientID: fmt.Sprintf("c%02d", i)})
	}
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Tokens = toks; o.Retain = 8 })
	put(t, ts.store, 0, 60, 0)

	// The model: the initial records, then every accepted push replayed in
	// commit order.
	model := map[string]string{}
	for i := range 60 {
		model[string(rec(i))] = string(val(i, 0))
	}
	var mu sync.Mutex
	var commits int
	ts.srv.afterPush = func(_ *session, _ node.Hash, changes []pushChange, over []uint64) {
		mu.Lock()
		defer mu.Unlock()
		commits++
		lost := map[uint64]bool{}
		for _, i := range over {
			lost[i] = true
		}
		for i, c := range changes {
			if lost[uint64(i)] {
				continue
			}
			if c.Delete {
				delete(model, string(c.Key))
			} else {
				model[string(c.Key)] = string(c.Value)
			}
		}
	}

	stores := make([]*tree.Store, clients)
	for i := range stores {
		stores[i] = openStore(t, t.TempDir(), smallChunks)
		defer stores[i].Close()
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var overridden atomic.Int64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			s := stores[i]
			opts := ClientOptions{Server: ts.addr, Token: toks[i].Token, Fingerprint: ts.fp, Merge: true}
			for round := range rounds {
				var edits []tree.Edit
				for range 1 + r.IntN(6) {
					k := rec(r.IntN(80))
					if r.IntN(5) == 0 {
						edits = append(edits, tree.Edit{Key: k, Delete: true})
					} else {
						edits = append(edits, tree.Edit{Key: k, Value: fmt.Appendf(nil, "c%02d-r%d-%s", i, round, k)})
					}
				}
				if _, err := s.Update(context.Background(), HeadRef, edits); err != nil {
					errs <- err
					return
				}
				res, err := Sync(context.Background(), s, opts)
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: %w", i, round, err)
					return
				}
				overridden.Add(int64(len(res.Overridden)))
				// Server wins: every overridden key holds the server's value locally.
				for _, o := range res.Overridden {
					v := get(t, s, res.Root, o.Key)
					if (v == nil) != (o.Server == nil) || (v != nil && *v != string(*o.Server)) {
						errs <- fmt.Errorf("client %d: overridden key %q not at the server's value", i, o.Key)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Quiesced: one more sync each brings every client to the server's root.
	for i, s := range stores {
		res, err := Sync(context.Background(), s, ClientOptions{Server: ts.addr, Token: toks[i].Token, Fingerprint: ts.fp})
		if err != nil {
			t.Fatal(err)
		}
		if res.Pushed != 0 {
			t.Fatalf("client %d still had %d local changes", i, res.Pushed)
		}
		checkConverged(t, ts, s)
	}
	// The server's records equal the model.
	root := ref(t, ts.store, HeadRef)
	it := ts.store.NewIterator(context.Background(), root, tree.Range{})
	got := map[string]string{}
	for it.Next() {
		v, err := ts.store.ReadValue(context.Background(), it.Value())
		if err != nil {
			t.Fatal(err)
		}
		got[string(it.Key())] = string(v)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(model) {
		t.Fatalf("server holds %d records, model %d", len(got), len(model))
	}
	for k, v := range model {
		if got[k] != v {
			t.Fatalf("key %q: server %q, model %q", k, got[k], v)
		}
	}
	t.Logf("%d clients × %d rounds: %d commits, %d overridden changes", clients, rounds, commits, overridden.Load())
	if overridden.Load() == 0 {
		t.Fatal("no conflicts exercised")
	}
}

// TestClientGCDuringSync: a garbage collection started on the client store
// while a sync walks waits for the sync, and deletes none of its nodes.
func TestClientGCDuringSync(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 2000, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.BatchNodes = 16
	gcDone := make(chan error, 1)
	var started atomic.Bool
	opts.Progress = func(p Progress) {
		if p.Phase == "walk" && p.Nodes > 100 && !started.Swap(true) {
			go func() { _, err := c.GC(context.Background()); gcDone <- err }()
		}
	}
	mustSync(t, c, opts)
	if !started.Load() {
		t.Fatal("GC not started")
	}
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	checkConverged(t, ts, c)
}

// TestWalkMemoryBounded: a clone holds at most a bounded frontier of
// hashes and pending branches, however large the tree: it fetches the
// lowest pending level first, in batches.
func TestWalkMemoryBounded(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	n := 20000
	if testing.Short() {
		n = 8000
	}
	put(t, ts.store, 0, n, 1)
	all := len(reachable(t, ts.store, ref(t, ts.store, HeadRef)))
	var maxF, maxP int
	walkHook = func(f, p int) { maxF, maxP = max(maxF, f), max(maxP, p) }
	defer func() { walkHook = nil }()
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.BatchNodes, opts.Parallel = 8, 2
	mustSync(t, c, opts)
	checkConverged(t, ts, c)
	// A node has at most 8 × fanout = 32 entries (chunker.MaxEntriesFactor).
	const maxEntries = 32
	height := 12
	bound := opts.Parallel * opts.BatchNodes * maxEntries * 2
	t.Logf("%d nodes; peak frontier %d, peak pending branches %d (bound %d)", all, maxF, maxP, bound)
	if maxF > bound || maxP > opts.Parallel*opts.BatchNodes*height {
		t.Fatalf("walk held too much: frontier %d, pending %d", maxF, maxP)
	}
}

// TestForceWalkRepairsMissingNode deletes a node from a synced client's
// store behind its back, then runs a forced walk (the lost or suspicious
// client's sync): the walk must notice the hole and refetch, not trust the
// hint, and must not fail on a hint it cannot read.
func TestForceWalkRepairsMissingNode(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 2000, 1)
	dir := t.TempDir()
	c := openStore(t, dir, smallChunks)
	mustSync(t, c, ts.opts(alice))
	base := ref(t, c, BaseRef)
	rn, err := c.Node(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	victim, _ := rn.Child(rn.Len() - 1) // the root's right-most child
	c.Close()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(append([]byte{'n'}, victim.Bytes()...), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c = openStore(t, dir, smallChunks)
	edit(t, ts.store, tree.Edit{Key: rec(3), Value: []byte("changed on server")}) // the left side only
	opts := ts.opts(alice)
	opts.ForceWalk = true
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		t.Fatalf("forced walk: %v", err)
	}
	if _, err := c.Verify(context.Background(), ref(t, c, BaseRef)); err != nil {
		t.Fatalf("forced walk (path %s) left the store broken: %v", res.Path, err)
	}
}

// TestWalkLargeResponses: walks whose responses span many chunks (default
// options, hundreds of leaves per level, some with out-of-line values, and
// deltas against the client's old nodes) store exactly the nodes they do
// not hold, fetch every value, and converge; a walker that stores slowly
// never holds up the server (fetchers queue chunks instead of waiting).
func TestWalkLargeResponses(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	big := func(i, ver int) []byte { return bytes.Repeat([]byte{byte(i), byte(ver)}, node.MaxInlineValue) }
	var edits []tree.Edit
	for i := range 12000 {
		v := val(i, 1)
		if i%97 == 0 {
			v = big(i, 1)
		}
		edits = append(edits, tree.Edit{Key: rec(i), Value: v})
	}
	edit(t, ts.store, edits...)
	c := openStore(t, t.TempDir(), smallChunks)
	defer c.Close()
	slow := 0
	walkHook = func(int, int) {
		if slow++; slow%4 == 0 {
			time.Sleep(10 * time.Millisecond) // a slow store: chunks queue up
		}
	}
	defer func() { walkHook = nil }()
	first := mustSync(t, c, ts.opts(alice))
	checkConverged(t, ts, c)
	t.Logf("clone: %d nodes in %d chunks", first.NodesFetched, slow)

	edits = edits[:0]
	for i := 0; i < 12000; i += 23 {
		v := val(i, 2)
		if i%3 == 0 {
			v = big(i, 2)
		}
		edits = append(edits, tree.Edit{Key: rec(i), Value: v})
	}
	edit(t, ts.store, edits...)
	all := reachable(t, ts.store, ref(t, ts.store, HeadRef))
	held := countHeld(t, c, all)
	opts := ts.opts(alice)
	opts.ForceWalk = true
	res := mustSync(t, c, opts)
	if res.NodesFetched != len(all)-held || res.NodesFetched < 2*walkChunkNodes {
		t.Fatalf("walk fetched %d nodes; %d in tree, %d held (want several chunks' worth)", res.NodesFetched, len(all), held)
	}
	checkConverged(t, ts, c)
	for _, i := range []int{0, 23 * 3, 97} {
		want := string(val(i, 1))
		if i%23 == 0 {
			want = string(val(i, 2))
			if i%3 == 0 {
				want = string(big(i, 2))
			}
		} else if i%97 == 0 {
			want = string(big(i, 1))
		}
		if got := get(t, c, ref(t, c, HeadRef), rec(i)); got == nil || *got != want {
			t.Fatalf("record %d: got %v", i, got != nil)
		}
	}
}
