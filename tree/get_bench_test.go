package tree

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkPointGet measures point Gets as the harness's store section does
// (bench/store.go): a bulk build of the records, both stores reopened (the
// tree with a working set on "head", as arbor.Open opens it), random
// updates in batches of 1000 through the working set and the tree caught
// up, then the same random keys read twice — first touch, then warm — from
// the tree and from raw Pebble with the store's own Pebble options and
// block cache size. Each pass alternates the two sides every 5 000 Gets.
//
//	go test ./tree/ -run '^$' -bench PointGet -benchtime=1x -bench.records=10000000
var benchSettle = flag.Bool("bench.settle", false, "BenchmarkPointGet: settle the tree's store and compact both stores before the Gets")

func BenchmarkPointGet(b *testing.B) {
	keys := benchKeys(*benchRecords)
	const (
		gets    = 50_000
		updates = 20_000
		batch   = 1000
	)
	b.Run(fmt.Sprintf("records=%d", len(keys)), func(b *testing.B) {
		b.StopTimer()
		ctx := context.Background()
		var first, warm [2]time.Duration // arbor, pebble
		for it := 0; it < b.N; it++ {
			dir := b.TempDir()
			aDir, pDir := filepath.Join(dir, "arbor"), filepath.Join(dir, "pebble")
			s, err := Open(aDir, &Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			buildTree(b, s, keys)
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			pc := pebble.NewCache(DefaultPebbleCacheSize)
			db, err := pebble.Open(pDir, pebbleOptions(pc))
			pc.Unref()
			if err != nil {
				b.Fatal(err)
			}
			buildRaw(b, db, keys, benchModes[0])
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
			if s, err = Open(aDir, &Options{NoSync: true, WorkingRef: "head"}); err != nil {
				b.Fatal(err)
			}
			pc = pebble.NewCache(DefaultPebbleCacheSize)
			db, err = pebble.Open(pDir, pebbleOptions(pc))
			pc.Unref()
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(uint64(it), 7))
			var v []byte
			for off := 0; off < updates; off += batch {
				edits := make([]Edit, batch)
				pb := db.NewBatch()
				for j := range edits {
					i := r.IntN(len(keys))
					v = benchValue(nil, i, 1+it)
					edits[j] = Edit{Key: keys[i], Value: v}
					if err := pb.Set(keys[i], v, nil); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Write(ctx, edits); err != nil {
					b.Fatal(err)
				}
				if err := pb.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				pb.Close()
			}
			root, err := s.Root("head")
			if err != nil {
				b.Fatal(err)
			}
			if *benchSettle {
				if err := s.Settle(ctx); err != nil {
					b.Fatal(err)
				}
				compactDB(b, db)
			}
			sample := make([][]byte, gets)
			for i := range sample {
				sample[i] = keys[r.IntN(len(keys))]
			}
			var buf []byte
			var aHits, aMiss, pHits, pMiss int64
			for pass := range 2 {
				d := &first
				if pass == 1 {
					d = &warm
				}
				if testing.Verbose() {
					st, _ := s.PebbleStats()
					m := db.Metrics()
					aHits, aMiss, pHits, pMiss = st.BlockCacheHits, st.BlockCacheMisses, m.BlockCache.Hits, m.BlockCache.Misses
				}
				b.StartTimer()
				for lo := 0; lo < len(sample); lo += 5000 {
					part := sample[lo:min(lo+5000, len(sample))]
					side := func(arbor bool) {
						t0 := time.Now()
						for _, k := range part {
							if arbor {
								if _, err := s.Get(ctx, root, k); err != nil {
									b.Fatal(err)
								}
								continue
							}
							pv, closer, err := db.Get(k)
							if err != nil {
								b.Fatal(err)
							}
							buf = append(buf[:0], pv...)
							closer.Close()
						}
						if arbor {
							d[0] += time.Since(t0)
						} else {
							d[1] += time.Since(t0)
						}
					}
					a := (lo/5000+it)%2 == 0
					side(a)
					side(!a)
				}
				b.StopTimer()
				if testing.Verbose() {
					st, _ := s.PebbleStats()
					m := db.Metrics()
					s.cache.mu.Lock()
					b.Logf("pass %d: arbor block cache %d hits %d misses, pebble %d hits %d misses; node cache %d MiB leaves, %d MiB branches, %d MiB rows",
						pass, st.BlockCacheHits-aHits, st.BlockCacheMisses-aMiss, m.BlockCache.Hits-pHits, m.BlockCache.Misses-pMiss,
						s.cache.bytes[classLeaf]>>20, s.cache.bytes[classBranch]>>20, s.cache.bytes[classRow]>>20)
					s.cache.mu.Unlock()
				}
			}
			s.Close()
			db.Close()
		}
		n := float64(gets * b.N)
		b.ReportMetric(n/first[0].Seconds(), "arbor-first-gets/s")
		b.ReportMetric(n/first[1].Seconds(), "pebble-first-gets/s")
		b.ReportMetric(first[1].Seconds()/first[0].Seconds(), "first-ratio")
		b.ReportMetric(n/warm[0].Seconds(), "arbor-warm-gets/s")
		b.ReportMetric(n/warm[1].Seconds(), "pebble-warm-gets/s")
		b.ReportMetric(warm[1].Seconds()/warm[0].Seconds(), "warm-ratio")
	})
}
