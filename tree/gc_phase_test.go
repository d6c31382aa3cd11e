package tree

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

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
)

type gcResult struct {
	st  GCStats
	err error
}

func startGC(s *Store) <-chan gcResult {
	ch := make(chan gcResult, 1)
	go func() {
		st, err := s.GC(context.Background())
		ch <- gcResult{st, err}
	}()
	return ch
}

// within runs f and fails the test if it does not return within d.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}

func awaitGC(t *testing.T, ch <-chan gcResult, what string) gcResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return", what)
		return gcResult{}
	}
}

// gcGarbageStore returns a store with a live tree under ref "head" (its
// records in model) and an unreferenced tree of the same size.
func gcGarbageStore(t *testing.T, s *Store, n int) (node.Hash, map[string]string) {
	t.Helper()
	ctx := context.Background()
	model, other := map[string]string{}, map[string]string{}
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%06d", i)
		model[k] = fmt.Sprintf("live-%d-%s", i, bytes.Repeat([]byte{'x'}, 50))
		other[k] = fmt.Sprintf("dead-%d-%s", i, bytes.Repeat([]byte{'y'}, 50))
	}
	head := build(t, s, model)
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	b.SetRef("head", head)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	build(t, s, other) // garbage
	return head, model
}

// TestBatchesRunWhileGCCompacts pauses a GC after it has swept and
// released the GC lock, before its compaction: batches must start and
// commit meanwhile, and a second GC must wait for the first to finish
// without holding off batches while it waits.
func TestBatchesRunWhileGCCompacts(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	_, model := gcGarbageStore(t, s, 500)

	paused, resume := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(resume) })
	defer release() // if the test fails early, before Cleanup's Close
	var calls atomic.Int32
	afterGCUnlock = func(context.Context) {
		if calls.Add(1) == 1 {
			close(paused)
			<-resume
		}
	}
	defer func() { afterGCUnlock = nil }()
	gc1 := startGC(s)
	select {
	case <-paused:
	case r := <-gc1:
		t.Fatalf("GC returned (%+v, %v) without reaching its compaction", r.st, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("GC never reached its compaction")
	}

	update := func(round int) func() error {
		return func() error {
			b, err := s.NewBatch()
			if err != nil {
				return err
			}
			head, err := s.Root("head")
			if err != nil {
				b.Discard()
				return err
			}
			k, v := fmt.Sprintf("k%06d", round*7), fmt.Sprintf("while-gc-%d", round)
			model[k] = v
			root, err := b.Apply(ctx, head, []Edit{{Key: []byte(k), Value: []byte(v)}})
			if err != nil {
				b.Discard()
				return err
			}
			b.SetRef("head", root)
			return b.Commit(ctx)
		}
	}
	within(t, 10*time.Second, "a batch while GC compacts", update(1))

	gc2 := startGC(s)
	time.Sleep(100 * time.Millisecond)
	select {
	case r := <-gc2:
		t.Fatalf("a second GC returned (%+v, %v) while the first was still compacting", r.st, r.err)
	default:
	}
	// The waiting GC holds no lock that batches need.
	within(t, 10*time.Second, "a batch while a second GC waits", update(2))
	if !s.gc.TryRLock() {
		t.Fatal("the GC lock is held exclusively while GC compacts")
	}
	s.gc.RUnlock()

	release()
	r1 := awaitGC(t, gc1, "the first GC")
	if r1.err != nil || r1.st.DeletedNodes == 0 {
		t.Fatalf("first GC = %+v, %v; want garbage deleted", r1.st, r1.err)
	}
	r2 := awaitGC(t, gc2, "the second GC")
	if r2.err != nil {
		t.Fatal(r2.err)
	}
	// The second GC ran after the first: it found the nodes that the two
	// batches replaced, which the first could not have seen.
	if r2.st.DeletedNodes == 0 {
		t.Fatalf("second GC = %+v: it deleted nothing, so it did not follow the first", r2.st)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("compaction phase entered %d times, want 2", n)
	}
	head, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, s, head, model)
	storedForms(t, s)
}

// TestCloseStopsGCInCompaction closes the store while one GC is in its
// compaction phase and another waits for it: Close must return, and both
// GCs must end with ErrClosed; the store must reopen intact.
func TestCloseStopsGCInCompaction(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	head, model := gcGarbageStore(t, s, 500)

	paused := make(chan struct{})
	var calls atomic.Int32
	var stopped atomic.Bool
	afterGCUnlock = func(gctx context.Context) {
		if calls.Add(1) != 1 {
			return
		}
		close(paused)
		select {
		case <-gctx.Done(): // Close stops the GC
			stopped.Store(true)
		case <-time.After(20 * time.Second):
		}
	}
	defer func() { afterGCUnlock = nil }()
	gc1 := startGC(s)
	<-paused
	gc2 := startGC(s)
	time.Sleep(50 * time.Millisecond)
	within(t, 10*time.Second, "Close while GC compacts", s.Close)
	if !stopped.Load() {
		t.Fatal("Close did not stop the GC in its compaction phase")
	}
	for i, ch := range []<-chan gcResult{gc1, gc2} {
		r := awaitGC(t, ch, fmt.Sprintf("GC %d", i+1))
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("GC %d during Close = %+v, %v; want ErrClosed", i+1, r.st, r.err)
		}
		if i == 0 && r.st.DeletedNodes == 0 {
			t.Fatalf("GC 1 = %+v: the sweep, done before Close, deleted nothing", r.st)
		}
	}
	s, err = Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkContents(t, s, head, model)
	storedForms(t, s)
}

// TestGCCopiesLiveValuesOnlyForLargeGarbage: a GC that finds little garbage
// does not copy the live records (what it writes to Pebble's log is far
// less than the live bytes); one that finds much copies them all, and
// afterwards Pebble's blob files hold about the live values only.
func TestGCCopiesLiveValuesOnlyForLargeGarbage(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, chunker.Config{}) // default node sizes: nodes go to blob files
	model := map[string]string{}
	for i := 0; i < 20000; i++ {
		model[fmt.Sprintf("k%06d", i)] = fmt.Sprintf("live-%d-%s", i, bytes.Repeat([]byte{'x'}, 60))
	}
	head := build(t, s, model)
	b, _ := s.NewBatch()
	b.SetRef("head", head)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	walIn := func() uint64 { return s.db.Metrics().WAL.BytesIn }
	gc := func() (GCStats, uint64) {
		t.Helper()
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
		w := walIn()
		st, err := s.GC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st, walIn() - w
	}

	// Small garbage: one record changed leaves one old path.
	model["k000123"] = "changed"
	var err error
	if head, err = s.Update(ctx, "head", []Edit{{Key: []byte("k000123"), Value: []byte("changed")}}); err != nil {
		t.Fatal(err)
	}
	st, written := gc()
	t.Logf("small garbage: %+v, %d bytes logged", st, written)
	if st.DeletedNodes == 0 || st.LiveBytes == 0 {
		t.Fatalf("small garbage: GC %+v deleted nothing or saw no live bytes", st)
	}
	if st.Copied || written > uint64(st.LiveBytes)/4 {
		t.Fatalf("small garbage (%d dead bytes, %d live): GC copied (%t) or logged %d bytes", st.DeletedBytes, st.LiveBytes, st.Copied, written)
	}
	checkContents(t, s, head, model)

	// Large garbage: an unreferenced tree as large as the live one.
	other := map[string]string{}
	for k := range model {
		other[k] = "dead-" + k + string(bytes.Repeat([]byte{'y'}, 60))
	}
	build(t, s, other)
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	blobBefore := s.db.Metrics().BlobFiles.ValueSize
	st, written = gc()
	blobAfter := s.db.Metrics().BlobFiles.ValueSize
	t.Logf("large garbage: %+v, %d bytes logged; blob file values %d before, %d after", st, written, blobBefore, blobAfter)
	if !st.Copied || written < uint64(st.LiveBytes)*9/10 {
		t.Fatalf("large garbage (%d dead bytes, %d live): GC copied (%t), logged %d bytes", st.DeletedBytes, st.LiveBytes, st.Copied, written)
	}
	if blobBefore < uint64(st.LiveBytes)*3/2 {
		t.Fatalf("before GC blob files held %d value bytes, %d live: the garbage never reached blob files, the test checks nothing", blobBefore, st.LiveBytes)
	}
	if float64(blobAfter) > 1.1*float64(st.LiveBytes) {
		t.Fatalf("after a copying GC blob files hold %d value bytes for %d live bytes: old blob files were not freed", blobAfter, st.LiveBytes)
	}
	checkContents(t, s, head, model)
}

// deltaGCStore builds two trees and updates each with scattered edits, so
// that nodes are stored as deltas. It keeps the first tree's original
// (ref "a0") and both updated trees (refs "a", "b"), so that some live
// deltas have a live base (a leaf of a0) and others a dead one (a leaf of
// the dropped original of b, or an intermediate version). It returns the
// refs' roots and records.
func deltaGCStore(t *testing.T, s *Store) (map[string]node.Hash, map[string]map[string]string) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	roots := map[string]node.Hash{}
	models := map[string]map[string]string{}
	for _, name := range []string{"a", "b"} {
		model := map[string]string{}
		for i := 0; i < 3000; i++ {
			model[fmt.Sprintf("%s%05d", name, i)] = fmt.Sprintf("value-%d-0", i)
		}
		root := build(t, s, model)
		if name == "a" {
			roots["a0"], models["a0"] = root, maps(model)
		}
		for round := 1; round <= 6; round++ {
			var edits []Edit
			for j := 0; j < 20; j++ {
				k := fmt.Sprintf("%s%05d", name, r.IntN(3000))
				v := fmt.Sprintf("value-%s-%d", k, round)
				model[k] = v
				edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
			}
			root = apply(t, s, root, edits)
		}
		roots[name], models[name] = root, model
	}
	b, _ := s.NewBatch()
	for name, h := range roots {
		b.SetRef(name, h)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return roots, models
}

// liveDeltaBases returns the live nodes stored as deltas, each with
// whether its base is live.
func liveDeltaBases(t *testing.T, s *Store, roots map[string]node.Hash) map[node.Hash]bool {
	t.Helper()
	live, blobs := map[node.Hash]struct{}{}, map[node.Hash]struct{}{}
	for _, h := range roots {
		if err := s.mark(context.Background(), h, live, blobs); err != nil {
			t.Fatal(err)
		}
	}
	out := map[node.Hash]bool{}
	eachStoredNode(t, s, func(h node.Hash, v []byte) bool {
		if !isDelta(v) {
			return true
		}
		if _, ok := live[h]; ok {
			_, baseLive := live[xxHash(v[2:deltaHeader(node.XXH3)])]
			out[h] = baseLive
		}
		return true
	})
	return out
}

// TestGCRewritesOnlyDeltasOfDeadBases: GC stores whole exactly the live
// delta-stored nodes whose base is dead, keeps the other live deltas as
// they are, and leaves every remaining delta with its base stored whole
// and every tree reading back, cold too.
func TestGCRewritesOnlyDeltasOfDeadBases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	roots, models := deltaGCStore(t, s)
	before := liveDeltaBases(t, s, roots)
	var keep, rewrite int
	for _, baseLive := range before {
		if baseLive {
			keep++
		} else {
			rewrite++
		}
	}
	t.Logf("live deltas: %d with a live base, %d with a dead one", keep, rewrite)
	if keep == 0 || rewrite == 0 {
		t.Fatal("the store lacks live deltas of both kinds: the test checks nothing")
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GC %+v", st)
	if st.RewrittenWhole != rewrite {
		t.Fatalf("GC rewrote %d nodes whole, want the %d live deltas of dead bases", st.RewrittenWhole, rewrite)
	}
	for h, baseLive := range before {
		_, derr := s.get(deltaKey(h))
		whole, nerr := s.get(nodeKey(h))
		switch {
		case baseLive && (derr != nil || nerr == nil):
			t.Fatalf("live delta %s of a live base: delta record %v, whole record %v; want kept as a delta only", h, derr, nerr)
		case !baseLive && (derr == nil || nerr != nil || isDelta(whole)):
			t.Fatalf("live delta %s of a dead base: delta record %v, whole record %v; want stored whole only", h, derr, nerr)
		}
	}
	if _, deltas := storedForms(t, s); deltas != keep {
		t.Fatalf("%d deltas stored after GC, want the %d of live bases", deltas, keep)
	}
	check := func() {
		for name, h := range roots {
			checkContents(t, s, h, models[name])
		}
	}
	check()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, &Options{NoSync: true, CacheSize: -1}); err != nil {
		t.Fatal(err)
	}
	check() // cold: every delta is rebuilt from its stored base
}

// TestInterruptedGCKeepsDeltaBases cuts the sweep short after each of its
// first batches, in a store whose live deltas have live and dead bases:
// every stored delta must still have its base stored whole, every stored
// node must head a complete subtree, and every ref's tree must read back.
func TestInterruptedGCKeepsDeltaBases(t *testing.T) {
	old := sweepBatchBytes
	sweepBatchBytes = 256
	defer func() { sweepBatchBytes = old; afterSweepBatch = nil }()
	ctx := context.Background()
	for stopAfter := 1; stopAfter <= 3; stopAfter++ {
		s := openTest(t, chunker.Config{})
		roots, models := deltaGCStore(t, s)
		gcCutShort(t, s, stopAfter)
		s.cache.invalidate()
		storedForms(t, s)
		var stored []node.Hash
		eachStoredNode(t, s, func(h node.Hash, _ []byte) bool {
			stored = append(stored, h)
			return true
		})
		for _, h := range stored {
			if _, err := s.Verify(ctx, h); err != nil {
				t.Fatalf("stop after %d batches: stored node %s heads an incomplete subtree: %v", stopAfter, h, err)
			}
		}
		for name, h := range roots {
			checkContents(t, s, h, models[name])
		}
	}
}

// TestGCCopyRacesBatches runs a copying GC (large garbage) while another
// goroutine keeps updating the live tree: the copy and compaction run
// without the GC lock, and afterwards every tree must read back, every
// delta must have its base stored whole, and a second GC must find the
// replaced nodes.
func TestGCCopyRacesBatches(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, chunker.Config{})
	_, model := gcGarbageStore(t, s, 20000)
	stopWrites := make(chan struct{})
	wrote := make(chan error, 1)
	var rounds int
	go func() {
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stopWrites:
				wrote <- nil
				return
			default:
			}
			var edits []Edit
			for j := 0; j < 20; j++ {
				k := fmt.Sprintf("k%06d", r.IntN(20000))
				v := fmt.Sprintf("round-%d-%s", rounds, k)
				model[k] = v
				edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
			}
			if _, err := s.Update(ctx, "head", edits); err != nil {
				wrote <- err
				return
			}
			rounds++
		}
	}()
	st, err := s.GC(ctx)
	close(stopWrites)
	if werr := <-wrote; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GC %+v with %d update batches alongside", st, rounds)
	if !st.Copied {
		t.Fatalf("GC %+v did not copy: the test checks nothing", st)
	}
	storedForms(t, s)
	head, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, s, head, model)
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	storedForms(t, s)
	s.cache.invalidate()
	checkContents(t, s, head, model)
}
