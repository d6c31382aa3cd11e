package net

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// TestCloneStreamsSubtrees: a clone into an empty store fetches whole
// subtrees (GetTree) with their out-of-line values: a few requests, not one
// per node and level, every node once, and the same store as a walk node by
// node. A walker slower than the network holds up the streams instead of
// queueing them without bound, and the clone still completes.
func TestCloneStreamsSubtrees(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	big := func(i int) []byte { return bytes.Repeat([]byte{byte(i), 'v'}, 2*node.MaxInlineValue) }
	var edits []tree.Edit
	for i := range 20000 {
		v := val(i, 1)
		if i%89 == 0 {
			v = append(big(i), byte(i>>8)) // distinct values: no blob is shared
		}
		edits = append(edits, tree.Edit{Key: rec(i), Value: v})
	}
	edit(t, ts.store, edits...)
	all := reachable(t, ts.store, ref(t, ts.store, HeadRef))
	rn, err := ts.store.Node(context.Background(), ref(t, ts.store, HeadRef))
	if err != nil {
		t.Fatal(err)
	}
	rootLen := rn.Len()

	byNode := func() *SyncResult {
		walkStreams = false
		defer func() { walkStreams = true }()
		c := openStore(t, t.TempDir(), smallChunks)
		defer c.Close()
		res := mustSync(t, c, ts.opts(alice))
		checkConverged(t, ts, c)
		return res
	}()

	for _, tt := range []struct {
		name  string
		queue int    // walkQueueBytes
		min   uint64 // streamMinRecords
		slow  bool
	}{
		{"default", walkQueueBytes, streamMinRecords, false},
		// Subtrees of 1/16 of the tree: the branches above them are
		// fetched as nodes and their children shared out.
		{"shared out", walkQueueBytes, 1, false},
		{"slow walker, small queue", 16 << 10, streamMinRecords, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, oldMin := walkQueueBytes, streamMinRecords
			walkQueueBytes, streamMinRecords = tt.queue, tt.min
			peak := 0
			queueHook = func(p int) { peak = max(peak, p) }
			chunks := 0
			if tt.slow {
				walkHook = func(int, int) {
					if chunks++; chunks%3 == 0 {
						time.Sleep(5 * time.Millisecond)
					}
				}
			}
			defer func() { walkQueueBytes, streamMinRecords, queueHook, walkHook = old, oldMin, nil, nil }()

			c := openStore(t, t.TempDir(), smallChunks)
			defer c.Close()
			opts := ts.opts(alice)
			opts.Parallel = 2
			res := mustSync(t, c, opts)
			checkConverged(t, ts, c)
			if res.Path != "walk" || res.NodesFetched != len(all) || res.BlobsFetched != byNode.BlobsFetched {
				t.Fatalf("path %q, %d nodes of %d, %d blobs (by node %d)", res.Path, res.NodesFetched, len(all), res.BlobsFetched, byNode.BlobsFetched)
			}
			// Hello; a node request per level above the streamed subtrees;
			// at most streamShare × Parallel subtree requests, or as many as
			// the root has children.
			most := 1 + 2*streamShare*opts.Parallel + node.MaxLevel
			if tt.min > 1 {
				most = 1 + rootLen
			}
			if res.RoundTrips > most {
				t.Fatalf("%d round trips (at most %d; %d by node)", res.RoundTrips, most, byNode.RoundTrips)
			}
			if res.BytesSent >= byNode.BytesSent/4 {
				t.Fatalf("sent %d bytes, by node %d", res.BytesSent, byNode.BytesSent)
			}
			// A fetcher adds at most a chunk past the bound before it waits.
			most = tt.queue + opts.Parallel*(walkChunkBytes+2*node.MaxInlineValue+chunker.MaxChunk)
			if peak > most {
				t.Fatalf("queue held %d bytes, bound %d", peak, most)
			}
			if tt.slow && (peak < tt.queue || res.BytesReceived < 2*int64(most)) {
				t.Fatalf("queue peaked at %d bytes of %d received: the slow walker did not test the bound", peak, res.BytesReceived)
			}
			if v := get(t, c, ref(t, c, BaseRef), rec(89)); v == nil || *v != string(append(big(89), 0)) {
				t.Fatal("out-of-line value not cloned")
			}
			t.Logf("%d nodes, %d blobs, %d round trips, %d B sent (by node: %d round trips, %d B); queue peak %d B",
				res.NodesFetched, res.BlobsFetched, res.RoundTrips, res.BytesSent, byNode.RoundTrips, byNode.BytesSent, peak)
		})
	}
}
