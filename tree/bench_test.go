package tree

// Benchmarks of the store at scale, each against a raw Pebble baseline
// measured in the same benchmark run with the same Pebble options (block
// cache size, bloom filters) and the same durability mode. Each benchmark
// iteration is a whole experiment (a 1M-record build takes seconds), so run
// them with -benchtime=1x:
//
//	go test ./tree/ -run '^$' -bench . -benchtime=1x
//	go test ./tree/ -run '^$' -bench Build -benchtime=1x -bench.records=100000
//
// Records have 16-byte keys and 100-byte pseudo-random values. The Pebble
// baseline stores one Pebble key per record (key → value).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

var (
	benchRecords  = flag.Int("bench.records", 1_000_000, "records in the tree benchmarks")
	benchMemTable = flag.Int("bench.memtable", 0, "if > 0, Pebble memtable size in bytes for both the stores and the baselines")
)

const (
	benchValueSize = 100
	benchBatch     = 10_000 // records per update batch, and per raw Pebble write batch
	benchGets      = 200_000
	benchCache     = 64 << 20 // Pebble block cache, for both sides
)

// benchKeys returns n distinct 16-byte keys in ascending order: a
// pseudo-random 8-byte prefix (so keys spread over the key space) and the
// record number.
func benchKeys(n int) [][]byte {
	buf := make([]byte, 16*n)
	keys := make([][]byte, n)
	for i := range keys {
		k := buf[16*i : 16*i+16 : 16*i+16]
		binary.BigEndian.PutUint64(k, splitmix(uint64(i)))
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		keys[i] = k
	}
	slices.SortFunc(keys, bytes.Compare)
	// Lay the sorted keys out contiguously, so that reading them in order
	// does not measure cache misses on a shuffled buffer.
	sorted := make([]byte, 0, 16*n)
	for i, k := range keys {
		sorted = append(sorted, k...)
		keys[i] = sorted[16*i : 16*i+16 : 16*i+16]
	}
	return keys
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// benchValue fills dst with record i's 100-byte value at version v.
func benchValue(dst []byte, i, v int) []byte {
	dst = dst[:0]
	x := uint64(i)<<20 ^ uint64(v)
	for len(dst) < benchValueSize {
		x = splitmix(x)
		dst = binary.LittleEndian.AppendUint64(dst, x)
	}
	return dst[:benchValueSize]
}

func setBenchMemTable() {
	if *benchMemTable > 0 {
		memTableSize = uint64(*benchMemTable)
	}
}

type benchMode struct {
	name string
	sync bool
}

var benchModes = []benchMode{{"NoSync", false}, {"Sync", true}}

func (m benchMode) wopts() *pebble.WriteOptions {
	if m.sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

// openRawPebble opens the baseline: a plain Pebble DB with the options an
// Arbor store uses (pebbleOptions): the same block cache size, 10-bit bloom
// filters and value separation policy.
func openRawPebble(b *testing.B, dir string) *pebble.DB {
	b.Helper()
	setBenchMemTable()
	pc := pebble.NewCache(benchCache)
	defer pc.Unref()
	db, err := pebble.Open(dir, pebbleOptions(pc))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func openBenchStore(b *testing.B, dir string, m benchMode) *Store {
	b.Helper()
	setBenchMemTable()
	s, err := Open(dir, &Options{NoSync: !m.sync, PebbleCacheSize: benchCache})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// buildTree bulk-loads records 0..n-1 (version 0) into s under ref "head".
func buildTree(b *testing.B, s *Store, keys [][]byte) node.Hash {
	b.Helper()
	ctx := context.Background()
	bt, err := s.NewBatch()
	if err != nil {
		b.Fatal(err)
	}
	bl := bt.NewBuilder(ctx)
	var v []byte
	for i, k := range keys {
		v = benchValue(v, i, 0)
		if err := bl.Add(k, v); err != nil {
			b.Fatal(err)
		}
	}
	root, err := bl.Finish()
	if err != nil {
		b.Fatal(err)
	}
	bt.SetRef("head", root)
	if err := bt.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	return root
}

// buildRaw loads the same records into the baseline in batches of
// benchBatch: intermediate batches without sync, the last one with the
// mode's durability, as the tree's Batch does (it spills nodes unsynced and
// commits once).
func buildRaw(b *testing.B, db *pebble.DB, keys [][]byte, m benchMode) {
	b.Helper()
	pb := db.NewBatch()
	var v []byte
	for i, k := range keys {
		v = benchValue(v, i, 0)
		if err := pb.Set(k, v, nil); err != nil {
			b.Fatal(err)
		}
		if (i+1)%benchBatch == 0 && i+1 < len(keys) {
			if err := pb.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			pb.Close()
			pb = db.NewBatch()
		}
	}
	if err := pb.Commit(m.wopts()); err != nil {
		b.Fatal(err)
	}
	pb.Close()
}

func reportRatio(b *testing.B, unit string, arbor, raw float64) {
	b.ReportMetric(arbor, "arbor-"+unit)
	b.ReportMetric(raw, "pebble-"+unit)
	b.ReportMetric(arbor/raw, "ratio")
}

// BenchmarkBuild bulk-loads the records with Builder, and the same records
// into raw Pebble. Target: arbor ≥ 1.0 × pebble records/s. Use
// -benchtime=2x or more: iterations alternate which side goes first.
func BenchmarkBuild(b *testing.B) {
	keys := benchKeys(*benchRecords)
	for _, m := range benchModes {
		b.Run(fmt.Sprintf("records=%d/%s", len(keys), m.name), func(b *testing.B) {
			var arbor, raw, settle time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				s := openBenchStore(b, filepath.Join(dir, "arbor"), m)
				db := openRawPebble(b, filepath.Join(dir, "pebble"))
				b.StartTimer()
				// Alternate which side goes first, so that neither always
				// runs beside the other's background compactions. The
				// tree's settle (which would start a second after its
				// commit) runs at once, untimed, so that it never runs
				// beside the baseline; settle-s reports its cost.
				sides := []func(){
					func() { t := time.Now(); buildRaw(b, db, keys, m); raw += time.Since(t) },
					func() {
						t := time.Now()
						buildTree(b, s, keys)
						arbor += time.Since(t)
						b.StopTimer()
						t = time.Now()
						s.stopSettle()
						if _, err := s.settle(context.Background(), true); err != nil {
							b.Fatal(err)
						}
						settle += time.Since(t)
						b.StartTimer()
					},
				}
				sides[i%2]()
				sides[1-i%2]()
			}
			n := float64(len(keys) * b.N)
			reportRatio(b, "records/s", n/arbor.Seconds(), n/raw.Seconds())
			b.ReportMetric(settle.Seconds()/float64(b.N), "settle-s")
		})
	}
}

// updateBatches returns nb batches of benchBatch random record indexes.
func updateBatches(seed uint64, n, nb int) [][]int {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([][]int, nb)
	for i := range out {
		out[i] = make([]int, benchBatch)
		for j := range out[i] {
			out[i][j] = r.IntN(n)
		}
	}
	return out
}

// applyUpdate applies one batch to ref "head" with Store.Update (one
// commit, with the store's durability), giving each record value version ver.
func applyUpdate(b *testing.B, s *Store, keys [][]byte, idx []int, ver int) {
	b.Helper()
	edits := make([]Edit, len(idx))
	vals := make([]byte, len(idx)*benchValueSize)
	for j, i := range idx {
		v := benchValue(vals[j*benchValueSize:j*benchValueSize], i, ver)
		edits[j] = Edit{Key: keys[i], Value: v}
	}
	if _, err := s.Update(context.Background(), "head", edits); err != nil {
		b.Fatal(err)
	}
}

// applyRawUpdate writes the same batch to the baseline: one Pebble batch,
// one commit with the mode's durability.
func applyRawUpdate(b *testing.B, db *pebble.DB, keys [][]byte, idx []int, ver int, m benchMode) {
	b.Helper()
	var v []byte
	pb := db.NewBatch()
	for _, i := range idx {
		v = benchValue(v, i, ver)
		if err := pb.Set(keys[i], v, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := pb.Commit(m.wopts()); err != nil {
		b.Fatal(err)
	}
	pb.Close()
}

// warmTree reads every record of the tree at root, filling the node cache
// as a long-running server's would be.
func warmTree(b *testing.B, s *Store, root node.Hash) {
	b.Helper()
	it := s.NewIterator(context.Background(), root, Range{})
	for it.Next() {
	}
	if err := it.Close(); err != nil {
		b.Fatal(err)
	}
}

// warmRaw reads every record of the baseline once.
func warmRaw(b *testing.B, db *pebble.DB) {
	b.Helper()
	it, err := db.NewIter(nil)
	if err != nil {
		b.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		_ = it.Value()
	}
	if err := it.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUpdate applies random updates in batches of 10k records to a
// warm tree of the records (one Store.Update, one commit, per batch), and
// the same batches to raw Pebble, each side followed by a memtable flush.
// Both stores are loaded and compacted before timing starts.
// Target: arbor ≥ 0.25 × pebble records/s.
func BenchmarkUpdate(b *testing.B) {
	keys := benchKeys(*benchRecords)
	const nb = 20
	for _, m := range benchModes {
		b.Run(fmt.Sprintf("records=%d/batch=%d/%s", len(keys), benchBatch, m.name), func(b *testing.B) {
			b.StopTimer()
			dir := b.TempDir()
			s := openBenchStore(b, filepath.Join(dir, "arbor"), m)
			db := openRawPebble(b, filepath.Join(dir, "pebble"))
			root := buildTree(b, s, keys)
			buildRaw(b, db, keys, m)
			// Compact both after the load, so that neither side's timed
			// updates pay for compacting the load (the tree's hash-keyed
			// nodes land in overlapping sstables; the baseline's sorted
			// keys do not).
			compactStore(b, s)
			compactDB(b, db)
			warmTree(b, s, root)
			warmRaw(b, db)
			var arbor, raw time.Duration
			for i := 0; i < b.N; i++ {
				batches := updateBatches(uint64(i), len(keys), nb)
				b.StartTimer()
				// The two sides alternate batch by batch, so that load from
				// elsewhere on the machine affects both alike. Each ends
				// with a memtable flush, so that neither leaves the work of
				// writing its updates to sstables out of the measurement.
				for bi, idx := range batches {
					ver := 1 + i*nb + bi
					t0 := time.Now()
					applyRawUpdate(b, db, keys, idx, ver, m)
					t1 := time.Now()
					applyUpdate(b, s, keys, idx, ver)
					arbor += time.Since(t1)
					raw += t1.Sub(t0)
				}
				t0 := time.Now()
				if err := db.Flush(); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := s.db.Flush(); err != nil {
					b.Fatal(err)
				}
				arbor += time.Since(t1)
				raw += t1.Sub(t0)
				b.StopTimer()
			}
			n := float64(nb * benchBatch * b.N)
			reportRatio(b, "records/s", n/arbor.Seconds(), n/raw.Seconds())
		})
	}
}

// BenchmarkGet reads random keys one at a time from one goroutine, from a
// warm tree (every key read once before timing) and from raw Pebble warmed
// the same way. Target: arbor ≥ 1.0 × pebble Gets/s.
func BenchmarkGet(b *testing.B) {
	keys := benchKeys(*benchRecords)
	m := benchModes[0] // reads do not depend on durability
	b.Run(fmt.Sprintf("records=%d/warm", len(keys)), func(b *testing.B) {
		b.StopTimer()
		ctx := context.Background()
		dir := b.TempDir()
		s := openBenchStore(b, filepath.Join(dir, "arbor"), m)
		db := openRawPebble(b, filepath.Join(dir, "pebble"))
		root := buildTree(b, s, keys)
		buildRaw(b, db, keys, m)
		order := rand.New(rand.NewPCG(1, 2)).Perm(len(keys))
		rawGet := func(k []byte) []byte {
			v, closer, err := db.Get(k)
			if err != nil {
				b.Fatal(err)
			}
			out := bytes.Clone(v)
			closer.Close()
			return out
		}
		for _, i := range order { // warm up both
			if _, err := s.Get(ctx, root, keys[i]); err != nil {
				b.Fatal(err)
			}
			rawGet(keys[i])
		}
		var arbor, raw time.Duration
		var sink int
		for it := 0; it < b.N; it++ {
			sample := order[:min(benchGets, len(order))]
			b.StartTimer()
			// Alternate the two sides every 10k Gets, so that load from
			// elsewhere on the machine affects both alike.
			for lo := 0; lo < len(sample); lo += 10_000 {
				part := sample[lo:min(lo+10_000, len(sample))]
				t0 := time.Now()
				for _, i := range part {
					sink += len(rawGet(keys[i]))
				}
				t1 := time.Now()
				for _, i := range part {
					v, err := s.Get(ctx, root, keys[i])
					if err != nil {
						b.Fatal(err)
					}
					sink += len(v)
				}
				arbor += time.Since(t1)
				raw += t1.Sub(t0)
			}
			b.StopTimer()
			if sink != 2*len(sample)*benchValueSize*(it+1) {
				b.Fatalf("read %d bytes", sink)
			}
		}
		n := float64(min(benchGets, len(order)) * b.N)
		reportRatio(b, "gets/s", n/arbor.Seconds(), n/raw.Seconds())
	})
}

// sizeStats summarises a sample.
type sizeStats struct{ mean, p50, p99, max float64 }

func summarize(xs []int) sizeStats {
	if len(xs) == 0 {
		return sizeStats{}
	}
	sort.Ints(xs)
	sum := 0
	for _, x := range xs {
		sum += x
	}
	q := func(p float64) float64 { return float64(xs[int(p*float64(len(xs)-1))]) }
	return sizeStats{mean: float64(sum) / float64(len(xs)), p50: q(0.5), p99: q(0.99), max: float64(xs[len(xs)-1])}
}

// BenchmarkNodeSizes builds the records and reports the distribution of
// encoded node sizes and entries per node, for leaves and for branches
// (and logs every level).
func BenchmarkNodeSizes(b *testing.B) {
	keys := benchKeys(*benchRecords)
	b.Run(fmt.Sprintf("records=%d", len(keys)), func(b *testing.B) {
		ctx := context.Background()
		for it := 0; it < b.N; it++ {
			s := openBenchStore(b, b.TempDir(), benchModes[0])
			root := buildTree(b, s, keys)
			sizes := map[int][]int{} // by level
			ents := map[int][]int{}
			stack := []node.Hash{root}
			for len(stack) > 0 {
				h := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				n, err := s.Node(ctx, h)
				if err != nil {
					b.Fatal(err)
				}
				sizes[n.Level()] = append(sizes[n.Level()], len(n.Raw()))
				ents[n.Level()] = append(ents[n.Level()], n.Len())
				if !n.IsLeaf() {
					for i := 0; i < n.Len(); i++ {
						c, _ := n.Child(i)
						stack = append(stack, c)
					}
				}
			}
			var bs, be []int
			for level := 0; level < len(sizes); level++ {
				ss, es := summarize(sizes[level]), summarize(ents[level])
				b.Logf("level %d: %7d nodes; bytes mean %6.0f p50 %6.0f p99 %6.0f max %6.0f; entries mean %5.1f p50 %4.0f p99 %4.0f max %4.0f",
					level, len(sizes[level]), ss.mean, ss.p50, ss.p99, ss.max, es.mean, es.p50, es.p99, es.max)
				if level > 0 {
					bs, be = append(bs, sizes[level]...), append(be, ents[level]...)
				}
			}
			for _, c := range []struct {
				name  string
				s, en []int
			}{{"leaf", sizes[0], ents[0]}, {"branch", bs, be}} {
				if len(c.s) == 0 {
					continue
				}
				ss, es := summarize(c.s), summarize(c.en)
				b.ReportMetric(float64(len(c.s)), c.name+"-nodes")
				b.ReportMetric(ss.mean, c.name+"-mean-B")
				b.ReportMetric(ss.p50, c.name+"-p50-B")
				b.ReportMetric(ss.p99, c.name+"-p99-B")
				b.ReportMetric(ss.max, c.name+"-max-B")
				b.ReportMetric(es.mean, c.name+"-mean-entries")
				b.ReportMetric(es.p50, c.name+"-p50-entries")
				b.ReportMetric(es.p99, c.name+"-p99-entries")
				b.ReportMetric(es.max, c.name+"-max-entries")
			}
			b.ReportMetric(float64(len(sizes)), "levels")
		}
	})
}

// compactDB flushes the memtable and compacts the whole key space, so that
// disk usage counts live data in sstables rather than WAL and overwritten
// versions.
func compactDB(b *testing.B, db *pebble.DB) {
	b.Helper()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff}, false); err != nil {
		b.Fatal(err)
	}
	// Let Pebble delete the files the compaction made obsolete, so that
	// directory sizes measure live data.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := db.Metrics(); m.Table.ObsoleteSize+m.BlobFiles.ObsoleteSize == 0 {
			break
		}
	}
}

// compactStore settles and compacts a tree store (Store.Compact), as a
// user would after a bulk load, and waits for its obsolete files to go.
func compactStore(b *testing.B, s *Store) {
	b.Helper()
	if err := s.Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// dirSize returns the bytes of the regular files under dir.
func dirSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // an obsolete file Pebble just deleted
		}
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkGC updates every record of the tree about once (100 batches of
// 10k random records for 1M records) with Store.Update, collects garbage,
// and compares the store's disk size with a fresh bulk build of the same
// final records in another store, both flushed and compacted. Target:
// ratio ≤ 2. It also reports raw Pebble's size for the same records.
func BenchmarkGC(b *testing.B) {
	keys := benchKeys(*benchRecords)
	m := benchModes[0]
	b.Run(fmt.Sprintf("records=%d/%s", len(keys), m.name), func(b *testing.B) {
		ctx := context.Background()
		for it := 0; it < b.N; it++ {
			dir := b.TempDir()
			s := openBenchStore(b, filepath.Join(dir, "updated"), m)
			buildTree(b, s, keys)
			nb := max(1, len(keys)/benchBatch)
			batches := updateBatches(99, len(keys), nb)
			for bi, idx := range batches {
				applyUpdate(b, s, keys, idx, 1+bi)
			}
			compactStore(b, s)
			before := dirSize(b, s.Dir())
			t0 := time.Now()
			// GC holds off batches only until it releases the GC lock,
			// before its compaction: lockTime is how long writes stall.
			var lockTime time.Duration
			afterGCUnlock = func(context.Context) { lockTime = time.Since(t0) }
			st, err := s.GC(ctx)
			afterGCUnlock = nil
			if err != nil {
				b.Fatal(err)
			}
			gcTime := time.Since(t0)
			compactStore(b, s)
			after := dirSize(b, s.Dir())

			// The final records: version of each record's last update.
			ver := make([]int, len(keys))
			for bi, idx := range batches {
				for _, i := range idx {
					ver[i] = 1 + bi
				}
			}
			fresh := openBenchStore(b, filepath.Join(dir, "fresh"), m)
			bt, _ := fresh.NewBatch()
			bl := bt.NewBuilder(ctx)
			var v []byte
			for i, k := range keys {
				v = benchValue(v, i, ver[i])
				if err := bl.Add(k, v); err != nil {
					b.Fatal(err)
				}
			}
			froot, err := bl.Finish()
			if err != nil {
				b.Fatal(err)
			}
			bt.SetRef("head", froot)
			if err := bt.Commit(ctx); err != nil {
				b.Fatal(err)
			}
			if head, _ := s.Root("head"); head != froot {
				b.Fatalf("updated head %s differs from the fresh build %s", head, froot)
			}
			compactStore(b, fresh)
			freshSize := dirSize(b, fresh.Dir())

			db := openRawPebble(b, filepath.Join(dir, "pebble"))
			pb := db.NewBatch()
			for i, k := range keys {
				pb.Set(k, benchValue(v, i, ver[i]), nil)
			}
			if err := pb.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			compactDB(b, db)
			rawSize := dirSize(b, filepath.Join(dir, "pebble"))

			b.ReportMetric(float64(before)/1e6, "before-gc-MB")
			b.ReportMetric(float64(after)/1e6, "after-gc-MB")
			b.ReportMetric(float64(freshSize)/1e6, "fresh-MB")
			b.ReportMetric(float64(rawSize)/1e6, "pebble-MB")
			b.ReportMetric(float64(after)/float64(freshSize), "ratio")
			b.ReportMetric(gcTime.Seconds(), "gc-s")
			b.ReportMetric(lockTime.Seconds(), "locked-s")
			b.Logf("GC %+v in %v (GC lock held %v); dir %d B before GC, %d after, fresh build %d, raw Pebble %d", st, gcTime, lockTime, before, after, freshSize, rawSize)
		}
	})
}

// benchCheckCache is BenchmarkApplyCheckAddresses's Pebble block cache.
// Pebble counts its memtables (up to two of memTableSize) against the
// block cache, so with the default 64 MiB and 32 MiB memtables almost no
// block stays cached, and every probe reads its bloom filter blocks again.
var benchCheckCache = flag.Int64("bench.checkcache", benchCache, "Pebble block cache of BenchmarkApplyCheckAddresses, in bytes")

// BenchmarkApplyCheckAddresses applies batches of 10k random updates to a
// warm tree of 200k records in two stores, one with Options.CheckAddresses
// and one without, alternating batch by batch (one Store.Update, one
// commit, per batch; no fsync), and reports both rates and their ratio
// (checked over plain).
func BenchmarkApplyCheckAddresses(b *testing.B) {
	const records, nb = 200_000, 10
	keys := benchKeys(records)
	b.StopTimer()
	dir := b.TempDir()
	var stores [2]*Store // plain, checked
	var root node.Hash
	for i := range stores {
		setBenchMemTable()
		s, err := Open(filepath.Join(dir, fmt.Sprint(i)), &Options{NoSync: true, PebbleCacheSize: *benchCheckCache, CheckAddresses: i == 1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		root = buildTree(b, s, keys)
		compactStore(b, s)
		warmTree(b, s, root)
		stores[i] = s
	}
	var took [2]time.Duration
	for i := 0; i < b.N; i++ {
		batches := updateBatches(uint64(i), len(keys), nb)
		b.StartTimer()
		for bi, idx := range batches {
			ver := 1 + i*nb + bi
			for j := range stores {
				j = (j + bi) % 2 // alternate which side goes first
				t := time.Now()
				applyUpdate(b, stores[j], keys, idx, ver)
				took[j] += time.Since(t)
			}
		}
		b.StopTimer()
	}
	n := float64(nb * benchBatch * b.N)
	b.ReportMetric(n/took[0].Seconds(), "plain-records/s")
	b.ReportMetric(n/took[1].Seconds(), "checked-records/s")
	b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "ratio")
}
