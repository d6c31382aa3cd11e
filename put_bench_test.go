package arbor_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// Embedded writes against raw Pebble with the same options, in the same
// run: each write is its own Put (Arbor) or Set (Pebble) of a 16-byte key
// and a 100-byte value, in both durability modes. ARBOR_PUT_N sets the
// records already in the store (default 100 000).

func putBenchN() int {
	if s := os.Getenv("ARBOR_PUT_N"); s != "" {
		var n int
		fmt.Sscan(s, &n)
		return n
	}
	return 100_000
}

func putKey(i uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, i*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(k[8:], i)
	return k
}

func putVal(r *rand.Rand) []byte {
	v := make([]byte, 100)
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	return v
}

// preloaded opens a DB holding n records (imported as one batch).
func preloaded(b *testing.B, dir string, n int, noSync bool) *arbor.DB {
	return preloadedWith(b, dir, n, &arbor.Options{NoSync: noSync})
}

// preloadedWith opens a DB with opts and fills it with n records.
func preloadedWith(b *testing.B, dir string, n int, opts *arbor.Options) *arbor.DB {
	b.Helper()
	db, err := arbor.Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	batch := new(arbor.Batch)
	for i := range n {
		batch.Put(putKey(uint64(i)), putVal(r))
		if batch.Len() == 50_000 || i == n-1 {
			// Over the working set's batch size: applied to the tree.
			if err := db.Apply(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = new(arbor.Batch)
		}
	}
	if _, err := db.Root(context.Background()); err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkPut(b *testing.B) {
	n := putBenchN()
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"NoSync", true}, {"Sync", false}} {
		b.Run("arbor/"+mode.name, func(b *testing.B) {
			db := preloaded(b, b.TempDir(), n, mode.noSync)
			defer db.Close()
			r := rand.New(rand.NewPCG(2, 2))
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := db.Put(ctx, putKey(uint64(r.IntN(2*n))), putVal(r)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
		b.Run("pebble/"+mode.name, func(b *testing.B) {
			pdb, wo := preloadedPebble(b, n, mode.noSync)
			defer pdb.Close()
			r := rand.New(rand.NewPCG(2, 2))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := pdb.Set(putKey(uint64(r.IntN(2*n))), putVal(r), wo); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}

// BenchmarkRootAfterPuts: the first Root after 10 000 single Puts (the
// working set's catch-up), against applying the same edits as one batch
// straight to the tree (NoSync).
func BenchmarkRootAfterPuts(b *testing.B) {
	n := putBenchN()
	const d = 10_000
	ctx := context.Background()
	b.Run("root-after-puts", func(b *testing.B) {
		db := preloaded(b, b.TempDir(), n, true)
		defer db.Close()
		r := rand.New(rand.NewPCG(3, 3))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			for range d {
				if err := db.Put(ctx, putKey(uint64(r.IntN(2*n))), putVal(r)); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			if _, err := db.Root(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-batch", func(b *testing.B) {
		db := preloaded(b, b.TempDir(), n, true)
		defer db.Close()
		r := rand.New(rand.NewPCG(3, 3))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			var edits []tree.Edit
			for range d {
				edits = append(edits, tree.Edit{Key: putKey(uint64(r.IntN(2 * n))), Value: putVal(r)})
			}
			b.StartTimer()
			if _, err := db.Store().Update(ctx, arbor.HeadRef, edits); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkApplyBatches: random updates in batches of 1000 and 10 000
// through DB.Apply, the last Root (the tree caught up) inside the timing,
// against raw Pebble batches of the same Sets, both durability modes.
func BenchmarkApplyBatches(b *testing.B) {
	n := putBenchN()
	ctx := context.Background()
	for _, bs := range []int{1000, 10_000} {
		for _, mode := range []struct {
			name   string
			noSync bool
		}{{"NoSync", true}, {"Sync", false}} {
			b.Run(fmt.Sprintf("arbor/batch=%d/%s", bs, mode.name), func(b *testing.B) {
				db := preloaded(b, b.TempDir(), n, mode.noSync)
				defer db.Close()
				r := rand.New(rand.NewPCG(4, 4))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					batch := new(arbor.Batch)
					for range bs {
						batch.Put(putKey(uint64(r.IntN(n))), putVal(r))
					}
					if err := db.Apply(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := db.Root(ctx); err != nil { // the tree caught up
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*bs)/b.Elapsed().Seconds(), "records/s")
			})
			b.Run(fmt.Sprintf("pebble/batch=%d/%s", bs, mode.name), func(b *testing.B) {
				pdb, wo := preloadedPebble(b, n, mode.noSync)
				defer pdb.Close()
				r := rand.New(rand.NewPCG(4, 4))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					pb := pdb.NewBatch()
					for range bs {
						pb.Set(putKey(uint64(r.IntN(n))), putVal(r), nil)
					}
					if err := pb.Commit(wo); err != nil {
						b.Fatal(err)
					}
					pb.Close()
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*bs)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// preloadedPebble opens raw Pebble with an Arbor store's default options,
// holding the n records preloaded puts in a DB, and returns the write
// options of the durability mode.
func preloadedPebble(b *testing.B, n int, noSync bool) (*pebble.DB, *pebble.WriteOptions) {
	b.Helper()
	pdb, err := pebble.Open(filepath.Join(b.TempDir(), "raw"), tree.PebbleOptions(tree.DefaultPebbleCacheSize))
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	for i := range n {
		pdb.Set(putKey(uint64(i)), putVal(r), pebble.NoSync)
	}
	if noSync {
		return pdb, pebble.NoSync
	}
	return pdb, pebble.Sync
}
