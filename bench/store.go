package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// pebbleBatch is how many records the raw Pebble baseline writes per batch.
const pebbleBatch = 1000

// StoreResult holds the store section: Arbor against raw Pebble on the same
// records, in the same runs.
type StoreResult struct {
	N          int    `json:"n"`
	ValueSize  int    `json:"value_size"`
	Durability string `json:"durability"`
	Updates    int    `json:"updates"`
	Gets       int    `json:"gets"`

	BuildArbor  Stat    `json:"build_arbor_records_per_s"`
	BuildPebble Stat    `json:"build_pebble_records_per_s"`
	BuildRatio  float64 `json:"build_ratio"`

	UpdateArbor Stat `json:"update_arbor_records_per_s"`
	// UpdateWriteArbor counts only the writes (durable at return, in the
	// working set), not the tree's catch-up after the last one.
	UpdateWriteArbor Stat    `json:"update_write_arbor_records_per_s"`
	UpdatePebble     Stat    `json:"update_pebble_records_per_s"`
	UpdateRatio      float64 `json:"update_ratio"`

	GetArbor  Stat    `json:"get_arbor_per_s"`
	GetPebble Stat    `json:"get_pebble_per_s"`
	GetRatio  float64 `json:"get_ratio"`

	// The same Gets again, each system's caches warm from the first pass.
	GetWarmArbor  Stat    `json:"get_warm_arbor_per_s"`
	GetWarmPebble Stat    `json:"get_warm_pebble_per_s"`
	GetWarmRatio  float64 `json:"get_warm_ratio"`

	BytesPerRecordArbor  Stat `json:"bytes_per_record_arbor"`
	BytesPerRecordPebble Stat `json:"bytes_per_record_pebble"`
}

// rawPebbleOptions are the options of the raw Pebble baseline: exactly an
// Arbor store's (block cache size, memtable size, bloom filters).
func rawPebbleOptions() *pebble.Options { return tree.PebbleOptions(tree.DefaultPebbleCacheSize) }

func openRawPebble(dir string) (*pebble.DB, error) {
	po := rawPebbleOptions()
	defer po.Cache.Unref()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open raw pebble %s: %w", dir, err)
	}
	return db, nil
}

func writeOpts(sync bool) *pebble.WriteOptions {
	if sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

// durability describes the write mode beside every write figure.
func durability(sync bool) string {
	if sync {
		return "synced: every commit fsyncs the WAL (Arbor: one commit per build and per update batch; Pebble: one fsync per build and per update batch)"
	}
	return "NoSync: commits are atomic but not fsynced, for Arbor and raw Pebble alike"
}

// buildArbor bulk-builds the workload's base records into a new store in
// dir, sets ref head, and returns the root and the elapsed time.
func buildArbor(ctx context.Context, w *Workload, dir string, sync bool, changed bool) (*tree.Store, node.Hash, time.Duration, error) {
	s, err := tree.Open(dir, &tree.Options{NoSync: !sync})
	if err != nil {
		return nil, node.Hash{}, 0, err
	}
	start := time.Now()
	b, err := s.NewBatch()
	if err != nil {
		s.Close()
		return nil, node.Hash{}, 0, err
	}
	bl := b.NewBuilder(ctx)
	gen := w.Base
	if changed {
		gen = w.Changed
	}
	if err := gen(bl.Add); err != nil {
		b.Discard()
		s.Close()
		return nil, node.Hash{}, 0, fmt.Errorf("build: %w", err)
	}
	root, err := bl.Finish()
	if err != nil {
		b.Discard()
		s.Close()
		return nil, node.Hash{}, 0, fmt.Errorf("build: %w", err)
	}
	b.SetRef("head", root)
	if err := b.Commit(ctx); err != nil {
		s.Close()
		return nil, node.Hash{}, 0, fmt.Errorf("build: %w", err)
	}
	return s, root, time.Since(start), nil
}

// buildPebble writes the base records into raw Pebble in batches of
// pebbleBatch, without fsync, and fsyncs the WAL once at the end when sync
// is set (the durability an Arbor bulk build gives).
func buildPebble(w *Workload, db *pebble.DB, sync bool) (time.Duration, error) {
	start := time.Now()
	pb := db.NewBatch()
	err := w.Base(func(k, v []byte) error {
		if err := pb.Set(k, v, nil); err != nil {
			return err
		}
		if pb.Count() >= pebbleBatch {
			if err := pb.Commit(pebble.NoSync); err != nil {
				return err
			}
			pb.Close()
			pb = db.NewBatch()
		}
		return nil
	})
	if err == nil {
		err = pb.Commit(writeOpts(sync))
	}
	pb.Close()
	if err != nil {
		return 0, fmt.Errorf("raw pebble build: %w", err)
	}
	return time.Since(start), nil
}

// sstBytes flushes the Pebble database in dir and returns its sstable and blob file
// bytes. The database must not be open elsewhere.
func sstBytes(dir string) (int64, error) {
	db, err := openRawPebble(dir)
	if err != nil {
		return 0, err
	}
	if err := db.Flush(); err != nil {
		db.Close()
		return 0, fmt.Errorf("flush %s: %w", dir, err)
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	// Values may sit in blob files (Pebble value separation), not sstables.
	sst, err := dirBytes(dir, ".sst")
	if err != nil {
		return 0, err
	}
	blob, err := dirBytes(dir, ".blob")
	return sst + blob, err
}

// runStore measures the store section for W(n, ·): build, random batched
// updates and point Gets, Arbor and raw Pebble in the same run, alternating
// which goes first.
func runStore(ctx context.Context, cfg *Config, n int) (*StoreResult, error) {
	w, err := NewWorkload(n, 0, cfg.ValueSize, cfg.Seed, false)
	if err != nil {
		return nil, err
	}
	res := &StoreResult{N: n, ValueSize: cfg.ValueSize, Durability: durability(cfg.Sync)}
	res.Updates = min(max(n/10, pebbleBatch), 20000)
	res.Gets = min(n, 50000)
	var bA, bP, uA, uP, gA, gP, dA, dP, wA, wP, uW []float64
	for run := range cfg.Runs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp(cfg.TmpDir, "store-")
		if err != nil {
			return nil, err
		}
		r, err := storeRun(ctx, cfg, w, dir, res.Updates, res.Gets, run)
		os.RemoveAll(dir)
		if err != nil {
			return nil, err
		}
		bA, bP = append(bA, r[0]), append(bP, r[1])
		uA, uP = append(uA, r[2]), append(uP, r[3])
		gA, gP = append(gA, r[4]), append(gP, r[5])
		dA, dP = append(dA, r[6]), append(dP, r[7])
		wA, wP = append(wA, r[8]), append(wP, r[9])
		uW = append(uW, r[10])
	}
	res.UpdateWriteArbor = NewStat(uW)
	res.BuildArbor, res.BuildPebble = NewStat(bA), NewStat(bP)
	res.UpdateArbor, res.UpdatePebble = NewStat(uA), NewStat(uP)
	res.GetArbor, res.GetPebble = NewStat(gA), NewStat(gP)
	res.BytesPerRecordArbor, res.BytesPerRecordPebble = NewStat(dA), NewStat(dP)
	res.BuildRatio = ratio(res.BuildArbor.Median, res.BuildPebble.Median)
	res.UpdateRatio = ratio(res.UpdateArbor.Median, res.UpdatePebble.Median)
	res.GetRatio = ratio(res.GetArbor.Median, res.GetPebble.Median)
	res.GetWarmArbor, res.GetWarmPebble = NewStat(wA), NewStat(wP)
	res.GetWarmRatio = ratio(res.GetWarmArbor.Median, res.GetWarmPebble.Median)
	return res, nil
}

// storeRun is one run of the store section. It returns, in order: build
// records/s (Arbor, Pebble), update records/s, Gets/s, stored bytes per
// record, warm Gets/s.
func storeRun(ctx context.Context, cfg *Config, w *Workload, dir string, updates, gets, run int) ([11]float64, error) {
	var out [11]float64
	aDir, pDir := filepath.Join(dir, "arbor"), filepath.Join(dir, "pebble")
	n := float64(w.N)

	// Bulk build, alternating which system goes first.
	var s *tree.Store
	var root node.Hash
	var pdb *pebble.DB
	buildA := func() error {
		var d time.Duration
		var err error
		s, root, d, err = buildArbor(ctx, w, aDir, cfg.Sync, false)
		out[0] = n / seconds(d)
		return err
	}
	buildP := func() error {
		var err error
		if pdb, err = openRawPebble(pDir); err != nil {
			return err
		}
		d, err := buildPebble(w, pdb, cfg.Sync)
		out[1] = n / seconds(d)
		return err
	}
	first, second := buildA, buildP
	if run%2 == 1 {
		first, second = buildP, buildA
	}
	if err := first(); err != nil {
		return out, err
	}
	if err := second(); err != nil {
		return out, err
	}
	defer func() {
		if s != nil {
			s.Close()
		}
		if pdb != nil {
			pdb.Close()
		}
	}()

	// On-disk bytes per record, after a flush, before any update.
	if err := s.Close(); err != nil {
		return out, err
	}
	s = nil
	if err := pdb.Close(); err != nil {
		return out, err
	}
	pdb = nil
	ab, err := sstBytes(aDir)
	if err != nil {
		return out, err
	}
	pbytes, err := sstBytes(pDir)
	if err != nil {
		return out, err
	}
	out[6], out[7] = float64(ab)/n, float64(pbytes)/n
	// Opened as arbor.Open opens a store: writes to "head" go through the
	// working set, as an embedding program's Put and Apply do.
	if s, err = tree.Open(aDir, &tree.Options{NoSync: !cfg.Sync, WorkingRef: "head"}); err != nil {
		return out, err
	}
	if pdb, err = openRawPebble(pDir); err != nil {
		return out, err
	}

	// Random batched updates of existing keys: the same keys and values
	// for both, in batches of pebbleBatch, one commit per batch. Arbor's go
	// through the working set (durable at return, the tree caught up in
	// the background); the time includes catching the tree up at the end.
	r := rand.New(rand.NewPCG(cfg.Seed, uint64(run)+100))
	idx := make([]int, updates)
	for i := range idx {
		idx[i] = r.IntN(w.N)
	}
	edits := make([]tree.Edit, 0, pebbleBatch)
	updA := func() error {
		start := time.Now()
		for off := 0; off < len(idx); off += pebbleBatch {
			edits = edits[:0]
			for _, i := range idx[off:min(off+pebbleBatch, len(idx))] {
				edits = append(edits, tree.Edit{Key: w.Key(nil, i), Value: w.Value(nil, i, uint64(2+run))})
			}
			if err := s.Write(ctx, edits); err != nil {
				return fmt.Errorf("update: %w", err)
			}
		}
		out[10] = float64(len(idx)) / time.Since(start).Seconds()
		nr, err := s.Root("head") // catches the tree up
		if err != nil {
			return fmt.Errorf("update: %w", err)
		}
		root = nr
		out[2] = float64(len(idx)) / time.Since(start).Seconds()
		return nil
	}
	updP := func() error {
		start := time.Now()
		key, val := make([]byte, KeySize), make([]byte, w.ValueSize)
		for off := 0; off < len(idx); off += pebbleBatch {
			pb := pdb.NewBatch()
			for _, i := range idx[off:min(off+pebbleBatch, len(idx))] {
				if err := pb.Set(w.Key(key, i), w.Value(val, i, uint64(2+run)), nil); err != nil {
					pb.Close()
					return err
				}
			}
			err := pb.Commit(writeOpts(cfg.Sync))
			pb.Close()
			if err != nil {
				return fmt.Errorf("raw pebble update: %w", err)
			}
		}
		out[3] = float64(len(idx)) / time.Since(start).Seconds()
		return nil
	}
	first, second = updA, updP
	if run%2 == 1 {
		first, second = updP, updA
	}
	if err := first(); err != nil {
		return out, err
	}
	if err := second(); err != nil {
		return out, err
	}

	// Point Gets of the same random existing keys.
	keys := make([][]byte, gets)
	for i := range keys {
		keys[i] = w.Key(nil, r.IntN(w.N))
	}
	// pass 0 is the first touch of the keys; pass 1 the same keys again.
	pass := 0
	getA := func() error {
		start := time.Now()
		for _, k := range keys {
			if _, err := s.Get(ctx, root, k); err != nil {
				return fmt.Errorf("get %x: %w", k, err)
			}
		}
		out[4+4*pass] = float64(len(keys)) / time.Since(start).Seconds()
		return nil
	}
	getP := func() error {
		// Copy each value out, as Arbor's Get does.
		var buf []byte
		start := time.Now()
		for _, k := range keys {
			v, closer, err := pdb.Get(k)
			if err != nil {
				return fmt.Errorf("raw pebble get %x: %w", k, err)
			}
			buf = append(buf[:0], v...)
			closer.Close()
		}
		out[5+4*pass] = float64(len(keys)) / time.Since(start).Seconds()
		return nil
	}
	first, second = getA, getP
	if run%2 == 1 {
		first, second = getP, getA
	}
	for pass = 0; pass < 2; pass++ {
		if err := first(); err != nil {
			return out, err
		}
		if err := second(); err != nil {
			return out, err
		}
	}
	return out, nil
}
