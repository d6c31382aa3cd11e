package diff

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

const benchRecords = 1_000_000

// benchKey is the 16-byte key of record i: base records are multiples of
// 10, so i*10+5 is a key the base tree lacks.
func benchKey(i int) []byte { return fmt.Appendf(nil, "%016d", i) }

func benchValue(r *rand.Rand) []byte {
	v := make([]byte, 100)
	for i := range v {
		v[i] = byte('a' + r.IntN(26))
	}
	return v
}

// fullScanDiff is the baseline: an ordered scan of both trees, compared
// record by record. It returns the number of differing keys.
func fullScanDiff(ctx context.Context, s *tree.Store, a, b node.Hash) (int, error) {
	ia, ib := s.NewIterator(ctx, a, tree.Range{}), s.NewIterator(ctx, b, tree.Range{})
	defer ia.Close()
	defer ib.Close()
	n := 0
	okA, okB := ia.Next(), ib.Next()
	for okA || okB {
		switch c := bytes.Compare(ia.Key(), ib.Key()); {
		case okA && (!okB || c < 0):
			n++
			okA = ia.Next()
		case okB && (!okA || c > 0):
			n++
			okB = ib.Next()
		default:
			if !ia.Value().Equal(ib.Value()) {
				n++
			}
			okA, okB = ia.Next(), ib.Next()
		}
	}
	if err := ia.Err(); err != nil {
		return 0, err
	}
	return n, ib.Err()
}

// BenchmarkDiff1M diffs a 1M-record tree (16-byte keys, 100-byte values,
// default fanouts) against copies differing in d scattered keys (a third
// each updated, inserted and deleted) and in one contiguous run of 10 000
// updated keys. It reports nodes loaded per diff, that count ÷ (d ×
// height), Nodes calls per diff, and the diff's time ÷ the time of a full
// ordered scan of both trees measured in the same run. Each is run once
// to warm the caches before it is timed. The trusthashes variants skip
// the hash check of loaded nodes (Options.TrustHashes); the rtt=1ms
// variants diff from sources that sleep 1 ms per Nodes call, as a remote
// peer would.
func BenchmarkDiff1M(b *testing.B) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "arbor-diff-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, err := tree.Open(dir, &tree.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	r := rand.New(rand.NewPCG(1, 1))
	batch, err := s.NewBatch()
	if err != nil {
		b.Fatal(err)
	}
	bl := batch.NewBuilder(ctx)
	for i := 0; i < benchRecords; i++ {
		if err := bl.Add(benchKey(i*10), benchValue(r)); err != nil {
			b.Fatal(err)
		}
	}
	base, err := bl.Finish()
	if err != nil {
		b.Fatal(err)
	}
	if err := batch.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	rn, err := s.Node(ctx, base)
	if err != nil {
		b.Fatal(err)
	}
	height := rn.Level() + 1

	scattered := func(d int) []tree.Edit {
		seen := map[int]bool{}
		var edits []tree.Edit
		for len(edits) < d {
			i := r.IntN(benchRecords)
			if seen[i] {
				continue
			}
			seen[i] = true
			switch len(edits) % 3 {
			case 0:
				edits = append(edits, tree.Edit{Key: benchKey(i * 10), Value: benchValue(r)})
			case 1:
				edits = append(edits, tree.Edit{Key: benchKey(i*10 + 5), Value: benchValue(r)})
			default:
				edits = append(edits, tree.Edit{Key: benchKey(i * 10), Delete: true})
			}
		}
		return edits
	}
	contiguous := func(d int) []tree.Edit {
		var edits []tree.Edit
		for i := benchRecords / 2; i < benchRecords/2+d; i++ {
			edits = append(edits, tree.Edit{Key: benchKey(i * 10), Value: benchValue(r)})
		}
		return edits
	}
	cases := []struct {
		name  string
		d     int
		edits func(int) []tree.Edit
	}{
		{"scattered/d=1", 1, scattered},
		{"scattered/d=100", 100, scattered},
		{"scattered/d=10000", 10000, scattered},
		{"contiguous/d=10000", 10000, contiguous},
	}
	for _, c := range cases {
		batch, err := s.NewBatch()
		if err != nil {
			b.Fatal(err)
		}
		other, err := batch.Apply(ctx, base, c.edits(c.d))
		if err != nil {
			b.Fatal(err)
		}
		if err := batch.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			// Baseline, after a warm-up that also fills the node cache.
			if _, err := fullScanDiff(ctx, s, base, other); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			n, err := fullScanDiff(ctx, s, base, other)
			scan := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			if n != c.d {
				b.Fatalf("full scan finds %d differences, want %d", n, c.d)
			}
			// Warm the diff's nodes too, as the scan's were.
			for _, err := range Diff(ctx, s, base, s, other, Options{}) {
				if err != nil {
					b.Fatal(err)
				}
			}
			var st Stats
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st = Stats{}
				got := 0
				for _, err := range Diff(ctx, s, base, s, other, Options{Stats: &st}) {
					if err != nil {
						b.Fatal(err)
					}
					got++
				}
				if got != c.d {
					b.Fatalf("diff finds %d changes, want %d", got, c.d)
				}
			}
			b.StopTimer()
			per := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(st.NodesLoaded), "nodes/op")
			b.ReportMetric(float64(st.NodesLoaded)/float64(c.d*height), "nodes/(d·height)")
			b.ReportMetric(float64(st.Batches), "batches/op")
			b.ReportMetric(float64(height), "height")
			b.ReportMetric(float64(scan.Nanoseconds()), "scan-ns")
			b.ReportMetric(float64(per)/float64(scan), "time/scan")
		})
		// The same diff without re-hashing loaded nodes.
		b.Run(c.name+"/trusthashes", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for _, err := range Diff(ctx, s, base, s, other, Options{TrustHashes: true}) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		// The same diff from sources one simulated millisecond away: the
		// time is dominated by round trips, one per level per batch.
		b.Run(c.name+"/rtt=1ms", func(b *testing.B) {
			from, to := latencySource{s, time.Millisecond}, latencySource{s, time.Millisecond}
			var st Stats
			for i := 0; i < b.N; i++ {
				st = Stats{}
				for _, err := range Diff(ctx, from, base, to, other, Options{Stats: &st}) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(st.NodesLoaded), "nodes/op")
			b.ReportMetric(float64(st.Batches), "batches/op")
		})
	}
}

// latencySource delays every Nodes call by rtt, like a remote peer.
type latencySource struct {
	node.Source
	rtt time.Duration
}

func (l latencySource) Nodes(ctx context.Context, hs []node.Hash) ([]*node.Node, error) {
	time.Sleep(l.rtt)
	return l.Source.Nodes(ctx, hs)
}
