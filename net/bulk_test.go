package net

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// forceBulk makes every clone of the test a bulk load and returns the
// count of walks that switched to one.
func forceBulk(t *testing.T) *int {
	old := walkBulkMin
	walkBulkMin = 1
	bulk := 0
	bulkHook = func() { bulk++ }
	t.Cleanup(func() { walkBulkMin, bulkHook = old, nil })
	return &bulk
}

// TestBulkClone clones into an empty store as a bulk load, with
// out-of-line values whose blobs are fetched before their leaves are
// stored, and checks that the clone verifies and that an ordinary sync on
// top of it still works.
func TestBulkClone(t *testing.T) {
	bulk := forceBulk(t)

	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 3000, 1)
	big := bytes.Repeat([]byte("x"), 3*node.MaxInlineValue)
	for i := 0; i < 3000; i += 97 {
		edit(t, ts.store, tree.Edit{Key: rec(i), Value: append(big, fmt.Sprint(i)...)})
	}
	c := openStore(t, t.TempDir(), smallChunks)
	defer c.Close()
	res := mustSync(t, c, ts.opts(alice))
	if res.Path != "walk" || res.BlobsFetched == 0 || *bulk != 1 {
		t.Fatalf("path %q, %d blobs fetched, %d bulk loads", res.Path, res.BlobsFetched, *bulk)
	}
	checkConverged(t, ts, c)
	if got := get(t, c, ref(t, c, BaseRef), rec(97)); got == nil || *got != string(big)+"97" {
		t.Fatal("out-of-line value not cloned")
	}
	// A store that holds a tree never walks in bulk.
	put(t, ts.store, 100, 200, 2)
	opts := ts.opts(alice)
	opts.ForceWalk = true
	mustSync(t, c, opts)
	checkConverged(t, ts, c)
	if *bulk != 1 {
		t.Fatalf("%d bulk loads", *bulk)
	}
}

// TestBulkCloneIngests clones a tree larger than one of tree's 32 MiB
// ingestion spills, so that some of its nodes reach the store by sstable
// ingestion before the walk ends.
func TestBulkCloneIngests(t *testing.T) {
	if testing.Short() {
		t.Skip("a 37 MB clone")
	}
	bulk := forceBulk(t)
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "server"), chunker.Config{})
	ctx := context.Background()
	bt, err := st.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	bl := bt.NewBuilder(ctx)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 320_000 {
		v := make([]byte, 100)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		if err := bl.Add(fmt.Appendf(nil, "key-%09d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	root, err := bl.Finish()
	if err != nil {
		t.Fatal(err)
	}
	bt.SetRef(HeadRef, root)
	if err := bt.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ts, stop := serveStore(t, st, dir, nil)
	defer stop()
	// The client settles only when told to, so that the test sees the
	// state the clone leaves.
	c, err := tree.Open(filepath.Join(dir, "client"), &tree.Options{NoSync: true, SettleDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := mustSync(t, c, ts.opts(alice))
	if *bulk != 1 || res.BytesReceived < 33<<20 {
		t.Fatalf("%d bulk loads, %d bytes received", *bulk, res.BytesReceived)
	}
	checkConverged(t, ts, c)
	// The ingested clone awaits its settle (which the command line runs
	// before exiting); after it, the store still holds the same tree.
	if u, err := c.Unsettled(); err != nil || !u {
		t.Fatalf("after a bulk clone: unsettled = %v, %v", u, err)
	}
	if err := c.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if u, err := c.Unsettled(); err != nil || u {
		t.Fatalf("after Settle: unsettled = %v, %v", u, err)
	}
	if _, err := c.Verify(ctx, root); err != nil {
		t.Fatal(err)
	}
	checkConverged(t, ts, c)
}
