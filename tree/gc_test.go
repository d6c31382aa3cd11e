package tree

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// TestGCWaitingDoesNotBlockNestedReads holds an iterator (a read lock),
// starts a GC that must wait for it, and then reads and writes from the
// same goroutine. With a blocking write lock that second read lock would
// deadlock behind the waiting GC.
func TestGCWaitingDoesNotBlockNestedReads(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	root, err := s.Update(ctx, "head", []Edit{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	it := s.NewIterator(ctx, root, Range{})
	gcDone := make(chan error, 1)
	go func() { _, err := s.GC(ctx); gcDone <- err }()
	time.Sleep(20 * time.Millisecond) // let GC start waiting
	done := make(chan error, 1)
	go func() {
		// The same logical reader: the iterator is still open.
		if _, err := s.Get(ctx, root, []byte("a")); err != nil {
			done <- err
			return
		}
		_, err := s.Update(ctx, "head", []Edit{{Key: []byte("c"), Value: []byte("3")}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read under an open iterator deadlocked behind a waiting GC")
	}
	select {
	case <-gcDone:
		t.Fatal("GC ran while an iterator was open")
	default:
	}
	it.Close()
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
}

func TestPreventGCHoldsOffCollection(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	release := s.PreventGC()
	gctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.GC(gctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GC under PreventGC = %v, want it to wait until its context ends", err)
	}
	release()
	release() // idempotent
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedGCKeepsSubtreesComplete cancels GC after each sweep batch
// in turn and checks the invariant sync relies on: every node still stored
// heads a complete subtree.
func TestInterruptedGCKeepsSubtreesComplete(t *testing.T) {
	old := sweepBatchBytes
	sweepBatchBytes = 512
	defer func() { sweepBatchBytes = old; afterSweepBatch = nil }()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(9, 9))
	for stopAfter := 1; stopAfter <= 4; stopAfter++ {
		s := openTest(t, smallConfig)
		model := map[string]string{}
		for len(model) < 3000 {
			model[randKey(r, 1_000_000)] = randValue(r)
		}
		root := build(t, s, model) // referenced by no ref: all garbage
		if has, _ := s.HasNode(root); !has {
			t.Fatal("built root missing")
		}
		gcCutShort(t, s, stopAfter)
		checked := 0
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixNode}, UpperBound: []byte{prefixNode + 1}})
		if err != nil {
			t.Fatal(err)
		}
		var hashes []node.Hash
		for it.First(); it.Valid(); it.Next() {
			hashes = append(hashes, xxHash(it.Key()[1:]))
		}
		it.Close()
		for _, h := range hashes {
			if _, err := s.Verify(ctx, h); err != nil {
				t.Fatalf("stop after %d batches: stored node %s heads an incomplete subtree: %v", stopAfter, h, err)
			}
			checked++
		}
		if checked == 0 && stopAfter == 1 {
			t.Fatal("the first batch deleted everything: the test checks nothing")
		}
	}
}

// TestCloseWaitsForOpenBatchWithoutDeadlock closes a store while a batch is
// open: Close must wait, the batch's further work must fail with ErrClosed
// instead of blocking, and Close must return once the batch is discarded.
func TestCloseWaitsForOpenBatchWithoutDeadlock(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.Update(ctx, "head", []Edit{{Key: []byte("a"), Value: []byte("1")}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned while a batch was open")
	default:
	}
	applied := make(chan error, 1)
	go func() {
		// A cold read inside the batch needs the store: it must fail fast.
		s.cache.invalidate()
		_, err := b.Apply(ctx, root, []Edit{{Key: []byte("b"), Value: []byte("2")}})
		applied <- err
	}()
	select {
	case err := <-applied:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatalf("Apply during Close = %v, want success or ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Apply inside an open batch deadlocked behind Close")
	}
	b.Discard()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the batch ended")
	}
}

// TestCompactKeepsContents: Compact after a bulk load and updates leaves
// every record and every retained tree readable and verified, and fails
// cleanly on a closed store.
func TestCompactKeepsContents(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	model := map[string]string{}
	for i := 0; i < 2000; i++ {
		model[fmt.Sprintf("k%05d", i)] = fmt.Sprint(i)
	}
	old := build(t, s, model)
	root := apply(t, s, old, []Edit{{Key: []byte("k00007"), Value: []byte("new")}, {Key: []byte("k00008"), Delete: true}})
	b, _ := s.NewBatch()
	b.SetRef("old", old)
	b.SetRef("head", root)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	oldModel := maps(model)
	model["k00007"] = "new"
	delete(model, "k00008")
	checkContents(t, s, root, model)
	checkContents(t, s, old, oldModel)
	s.Close()
	if err := s.Compact(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Compact on a closed store: %v, want ErrClosed", err)
	}
}

// gcCutShort runs a GC on s that is cancelled after its first stopAfter
// sweep batches, and fails the test unless it stopped mid-sweep.
func gcCutShort(t *testing.T, s *Store, stopAfter int) {
	t.Helper()
	gctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches := 0
	afterSweepBatch = func() {
		if batches++; batches == stopAfter {
			cancel()
		}
	}
	defer func() { afterSweepBatch = nil }()
	if _, err := s.GC(gctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("stop after %d batches: GC = %v, want cancelled mid-sweep", stopAfter, err)
	}
}
