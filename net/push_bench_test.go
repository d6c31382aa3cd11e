package net

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// BenchmarkPushAddressCheck measures the server's time to decide, store
// and commit a push of 10 000 new records (90% of 100-byte values, 10% of
// 3 KiB values stored out of line) into a tree of 200 000 records, with
// the address checks every push batch makes, and without them, in the
// same run. Durability: Pebble NoSync (the test stores).
func BenchmarkPushAddressCheck(b *testing.B) {
	const n, d = 200_000, 10_000
	iter := 0
	for _, check := range []bool{true, false} {
		b.Run(fmt.Sprintf("check=%v", check), func(b *testing.B) {
			// A fresh server each: the pushes add records.
			ts := startServer(b, chunker.Config{}, nil) // default node sizes
			r := rand.New(rand.NewPCG(1, 2))
			var edits []tree.Edit
			for i := range n {
				edits = append(edits, tree.Edit{Key: benchKey(i), Value: benchVal(r)})
			}
			if _, err := ts.store.Update(context.Background(), HeadRef, edits); err != nil {
				b.Fatal(err)
			}

			checkPushAddresses = check
			defer func() { checkPushAddresses = true }()
			for i := 0; i < b.N; i++ {
				changes := make([]pushChange, 0, d) // new keys: every change applies
				for j := range d {
					v := benchVal(r)
					if j%10 == 0 {
						v = make([]byte, 3000)
						for k := range v {
							v[k] = byte(r.Uint32())
						}
					}
					changes = append(changes, pushChange{Key: benchKey(n + (iter*d + j)), Value: v})
				}
				slices.SortFunc(changes, func(a, b pushChange) int { return bytes.Compare(a.Key, b.Key) })
				changes = slices.CompactFunc(changes, func(a, b pushChange) bool { return bytes.Compare(a.Key, b.Key) == 0 })
				iter++
				sess := &session{s: ts.srv, clientID: "bench", read: scope.All, write: scope.All,
					published: map[node.Hash]bool{}, nodes: map[node.Hash]bound{}, sent: map[node.Hash]struct{}{},
					blobs: map[node.Hash]bool{}, accepted: map[string]node.Hash{}}
				if _, err := ts.srv.applyPush(context.Background(), sess, changes); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(d)*float64(b.N)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}
