package net

import (
	"bytes"
	"context"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

const alice, bob = "tok-alice-0123456789", "tok-bob-0123456789"

// TestCloneAndIncrementalPull: a fresh client clones by walking, then pulls
// server edits (updates, inserts, deletes) by the retained path and, when
// forced, by a walk; each ends at the server's root.
func TestCloneAndIncrementalPull(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 500, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	var last Progress
	opts := ts.opts(alice)
	opts.Progress = func(p Progress) { last = p }
	res := mustSync(t, c, opts)
	if res.Path != "walk" || res.Pulled != 500 {
		t.Fatalf("clone: path %q pulled %d", res.Path, res.Pulled)
	}
	if last.Phase != "done" || last.Total != 500 || last.Records != 500 || last.BytesReceived != res.BytesReceived {
		t.Fatalf("final progress %+v", last)
	}
	checkConverged(t, ts, c)
	if res.RoundTrips < 2 || res.NodesFetched == 0 || res.BytesReceived == 0 || res.BytesSent == 0 {
		t.Fatalf("clone accounting: %+v", res)
	}

	// Nothing changed: one round trip.
	res = mustSync(t, c, ts.opts(alice))
	if res.RoundTrips != 1 || res.Path != "none" || res.Pulled != 0 {
		t.Fatalf("idle sync: %+v", res)
	}

	for _, force := range []bool{false, true} {
		edit(t, ts.store,
			tree.Edit{Key: rec(7), Value: []byte("updated")},
			tree.Edit{Key: rec(1000), Value: []byte("inserted")},
			tree.Edit{Key: rec(42), Delete: true},
		)
		if force {
			edit(t, ts.store, tree.Edit{Key: rec(8), Value: []byte("forced walk")})
		}
		opts := ts.opts(alice)
		opts.ForceWalk = force
		res = mustSync(t, c, opts)
		wantPath, wantPulled := "retained", 3
		if force {
			wantPath, wantPulled = "walk", 2 // rec 7 and 1000 already hold these values
		}
		if res.Path != wantPath || res.Pulled != wantPulled {
			t.Fatalf("force=%v: path %q pulled %d, want %q %d", force, res.Path, res.Pulled, wantPath, wantPulled)
		}
		checkConverged(t, ts, c)
		head := ref(t, c, HeadRef)
		if v := get(t, c, head, rec(42)); v != nil {
			t.Fatalf("deleted key still present: %q", *v)
		}
		if v := get(t, c, head, rec(7)); v == nil || *v != "updated" {
			t.Fatalf("rec 7 = %v", v)
		}
		// Restore for the next round.
		edit(t, ts.store, tree.Edit{Key: rec(42), Value: val(42, 1)})
		mustSync(t, c, ts.opts(alice))
	}
}

// TestPushServerWins: two clients change overlapping keys; the first push
// wins where both changed, the second client's conflicting changes are
// reported overridden with the server's value, non-conflicting ones land,
// and both end at the server's root.
func TestPushServerWins(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 100, 1)
	a := openStore(t, t.TempDir(), smallChunks)
	b := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, a, ts.opts(alice))
	mustSync(t, b, ts.opts(bob))

	edit(t, a, tree.Edit{Key: rec(1), Value: []byte("a1")}, tree.Edit{Key: rec(2), Delete: true}, tree.Edit{Key: rec(500), Value: []byte("a-new")})
	edit(t, b, tree.Edit{Key: rec(1), Value: []byte("b1")}, tree.Edit{Key: rec(2), Value: []byte("b2")}, tree.Edit{Key: rec(3), Value: []byte("b3")}, tree.Edit{Key: rec(500), Value: []byte("b-new")})

	ra := mustSync(t, a, ts.opts(alice))
	if ra.Pushed != 3 || ra.Accepted != 3 || len(ra.Overridden) != 0 {
		t.Fatalf("alice: %+v", ra)
	}
	// No echo: alice's accepted changes are not sent back to her; the
	// server's tree after her push is her head, so nothing is pulled.
	if ra.Path != "none" || ra.Pulled != 0 || ra.RoundTrips > 2 {
		t.Fatalf("alice pulled %d changes by %q in %d round trips, want none", ra.Pulled, ra.Path, ra.RoundTrips)
	}
	checkConverged(t, ts, a)
	rb := mustSync(t, b, ts.opts(bob))
	if rb.Pushed != 4 || rb.Accepted != 1 || len(rb.Overridden) != 3 {
		t.Fatalf("bob: pushed %d accepted %d overridden %d", rb.Pushed, rb.Accepted, len(rb.Overridden))
	}
	// Bob receives alice's three changes (which override his), not his own.
	if rb.Pulled != 3 {
		t.Fatalf("bob pulled %d changes, want 3", rb.Pulled)
	}
	checkConverged(t, ts, b)
	want := map[string][2]*string{
		string(rec(1)):   {sp("b1"), sp("a1")},
		string(rec(2)):   {sp("b2"), nil},
		string(rec(500)): {sp("b-new"), sp("a-new")},
	}
	for _, o := range rb.Overridden {
		w, ok := want[string(o.Key)]
		if !ok {
			t.Fatalf("unexpected overridden key %q", o.Key)
		}
		if !eqp(o.Local, w[0]) || !eqp(o.Server, w[1]) {
			t.Fatalf("key %q: local %v server %v", o.Key, str(o.Local), str(o.Server))
		}
	}
	root := ref(t, ts.store, HeadRef)
	for k, w := range map[string]*string{string(rec(1)): sp("a1"), string(rec(2)): nil, string(rec(3)): sp("b3"), string(rec(500)): sp("a-new")} {
		if g := get(t, ts.store, root, []byte(k)); !eqs(g, w) {
			t.Fatalf("server %q = %v, want %v", k, g, w)
		}
	}
	// Alice pulls bob's accepted change.
	mustSync(t, a, ts.opts(alice))
	checkConverged(t, ts, a)
}

// TestFirstSyncPushesLocalData: a client that wrote before ever syncing
// pushes its records ("absent" as starting value), and keys the server
// already holds keep the server's value.
func TestFirstSyncPushesLocalData(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 50, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	put(t, c, 40, 80, 2)
	opts := ts.opts(alice)
	opts.Merge = true
	res := mustSync(t, c, opts)
	if res.Pushed != 40 || res.Accepted != 30 || len(res.Overridden) != 10 || res.Path != "walk" {
		t.Fatalf("res: pushed %d accepted %d overridden %d path %s", res.Pushed, res.Accepted, len(res.Overridden), res.Path)
	}
	checkConverged(t, ts, c)
	root := ref(t, c, HeadRef)
	if v := get(t, c, root, rec(45)); v == nil || *v != string(val(45, 1)) {
		t.Fatalf("rec 45 = %v", v)
	}
	if v := get(t, c, root, rec(70)); v == nil || *v != string(val(70, 2)) {
		t.Fatalf("rec 70 = %v", v)
	}
}

// TestLargeValues: out-of-line values travel both ways, and blobs the
// client holds are not fetched again.
func TestLargeValues(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	big := func(seed byte, n int) []byte {
		b := make([]byte, n)
		x := uint32(seed) + 1
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		return b
	}
	edit(t, ts.store, tree.Edit{Key: []byte("big1"), Value: big(1, 200<<10)}, tree.Edit{Key: []byte("small"), Value: []byte("s")})
	c := openStore(t, t.TempDir(), smallChunks)
	res := mustSync(t, c, ts.opts(alice))
	if res.BlobsFetched == 0 {
		t.Fatal("no blobs fetched")
	}
	checkConverged(t, ts, c)
	if v, err := c.Get(context.Background(), ref(t, c, HeadRef), []byte("big1")); err != nil || !bytes.Equal(v, big(1, 200<<10)) {
		t.Fatalf("big1: %v", err)
	}
	// Server edits the big value slightly: only changed chunks travel.
	v2 := big(1, 200<<10)
	copy(v2[100<<10:], "edited")
	edit(t, ts.store, tree.Edit{Key: []byte("big1"), Value: v2})
	res = mustSync(t, c, ts.opts(alice))
	if res.Path != "retained" || res.BytesReceived > 120<<10 {
		t.Fatalf("edit of big value: path %s, %d bytes received", res.Path, res.BytesReceived)
	}
	checkConverged(t, ts, c)
	// Client pushes a big value.
	edit(t, c, tree.Edit{Key: []byte("big2"), Value: big(2, 300<<10)})
	res = mustSync(t, c, ts.opts(alice))
	if res.Accepted != 1 {
		t.Fatalf("push big: %+v", res)
	}
	checkConverged(t, ts, c)
	if v, err := ts.store.Get(context.Background(), ref(t, ts.store, HeadRef), []byte("big2")); err != nil || !bytes.Equal(v, big(2, 300<<10)) {
		t.Fatalf("server big2: %v", err)
	}
}

func sp(s string) *string { return &s }
func str(b *[]byte) any {
	if b == nil {
		return nil
	}
	return string(*b)
}
func eqp(b *[]byte, s *string) bool {
	if b == nil || s == nil {
		return b == nil && s == nil
	}
	return string(*b) == *s
}
func eqs(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

var _ = node.EmptyRoot(node.XXH3)

// TestManyExchangesOneSession: hundreds of exchanges in one connection
// (far more than the server's 16 concurrent streams) complete: every
// exchange reads its stream to the end on both sides, returning the credit.
func TestManyExchangesOneSession(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 800, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	put(t, c, 5000, 5001, 1) // a store that holds nodes walks node by node
	opts := ts.opts(alice)
	opts.Merge = true
	opts.BatchNodes, opts.Parallel = 1, 3
	res := mustSync(t, c, opts)
	if res.RoundTrips < 100 {
		t.Fatalf("only %d exchanges", res.RoundTrips)
	}
	checkConverged(t, ts, c)
}
