package tree

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// inlineValues counts the node and blob values of valueSepMin bytes or
// more that Pebble holds inline in sstables or memtables.
func inlineValues(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	for _, pfx := range []byte{prefixNode, prefixBlob} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfx}, UpperBound: []byte{pfx + 1}})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			if lv := it.LazyValue(); lv.Fetcher == nil && len(lv.ValueOrHandle) >= valueSepMin {
				n++
			}
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// bulkLoad builds a tree of n records with large values (several nodes per
// spill, many spills) through a bulk load and returns its root.
func bulkLoad(t *testing.T, s *Store, n int) node.Hash {
	t.Helper()
	old := ingestSpillBytes
	ingestSpillBytes = 64 << 10
	t.Cleanup(func() { ingestSpillBytes = old })
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	bl := b.NewBuilder(context.Background())
	for i := range n {
		if err := bl.Add([]byte(fmt.Sprintf("key-%06d", i)), make([]byte, 200+i%300)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := bl.Finish()
	if err != nil {
		t.Fatal(err)
	}
	b.SetRef("head", root)
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestSettleMovesInlineValues: a bulk load's ingested nodes sit inline in
// sstables; settle moves every one to blob files, and the tree reads the
// same, before and after reopening.
func TestSettleMovesInlineValues(t *testing.T) {
	pebbleOptionsHook = func(po *pebble.Options) {
		// Keep the ingested sstables as they are; with no compactions,
		// many of them must not stall writes.
		po.DisableAutomaticCompactions = true
		po.L0StopWritesThreshold = 10000
	}
	t.Cleanup(func() { pebbleOptionsHook = nil })
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true, SettleDelay: -1}) // settled by hand below
	if err != nil {
		t.Fatal(err)
	}
	root := bulkLoad(t, s, 3000)
	before := inlineValues(t, s)
	if before == 0 {
		t.Fatal("a bulk load with compactions off left no value inline")
	}
	n, err := s.settle(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if n != before {
		t.Errorf("settle wrote %d values, %d were inline", n, before)
	}
	if left := inlineValues(t, s); left != 0 {
		t.Errorf("%d values still inline after settle (of %d)", left, before)
	}
	if _, err := s.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir, -1)
	defer s.Close()
	if _, err := s.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	if left := inlineValues(t, s); left != 0 {
		t.Errorf("%d values inline after reopening", left)
	}
	if unsettled(t, s) {
		t.Error("the store is still marked unsettled after settling")
	}
}

// unsettled reports whether s carries the unsettled mark.
func unsettled(t *testing.T, s *Store) bool {
	t.Helper()
	u, err := s.Unsettled()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUnsettledStoreSettlesLater: a process that bulk-loads and closes
// before its settle ran leaves the store marked; the next Open settles it
// in the background, and Settle settles at once (and is a no-op after).
func TestUnsettledStoreSettlesLater(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true, SettleDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	bulkLoad(t, s, 3000)
	if !unsettled(t, s) {
		t.Fatal("a bulk load's commit did not mark the store unsettled")
	}

	s = reopen(t, s, dir, 10*time.Millisecond) // settles on its own
	deadline := time.Now().Add(20 * time.Second)
	for unsettled(t, s) || inlineValues(t, s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reopened store not settled after 20 s (%d values inline)", inlineValues(t, s))
		}
		time.Sleep(20 * time.Millisecond)
	}

	s = reopen(t, s, dir, -1)
	defer s.Close()
	root := bulkLoad(t, s, 2000)
	if !unsettled(t, s) {
		t.Fatal("second bulk load did not mark the store")
	}
	if err := s.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if unsettled(t, s) || inlineValues(t, s) > 0 {
		t.Fatalf("after Settle: marked %v, %d values inline", unsettled(t, s), inlineValues(t, s))
	}
	if err := s.Settle(context.Background()); err != nil { // nothing to do
		t.Fatal(err)
	}
	if _, err := s.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}
}

// TestBulkCommitSchedulesSettle: after a bulk load's commit, the store
// settles on its own; Compact settles at once; Close stops a settle that
// has not started without error.
func TestBulkCommitSchedulesSettle(t *testing.T) {
	open := func(delay time.Duration) *Store {
		s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true, SettleDelay: delay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	s := open(10 * time.Millisecond)
	bulkLoad(t, s, 3000)
	deadline := time.Now().Add(20 * time.Second)
	for unsettled(t, s) || inlineValues(t, s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d values still inline 20 s after the bulk commit", inlineValues(t, s))
		}
		time.Sleep(20 * time.Millisecond)
	}

	s2 := open(-1)
	root := bulkLoad(t, s2, 3000)
	if err := s2.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := inlineValues(t, s2); left != 0 || unsettled(t, s2) {
		t.Errorf("after Compact: %d values inline, marked %v", left, unsettled(t, s2))
	}
	if _, err := s2.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}

	s3 := open(time.Hour)
	bulkLoad(t, s3, 1000) // schedules a settle an hour away
	if err := s3.Close(); err != nil {
		t.Fatal(err)
	}
	s3.settler.mu.Lock()
	pending := s3.settler.timer != nil
	s3.settler.mu.Unlock()
	if pending {
		t.Error("Close left a settle scheduled")
	}
}

// reopen closes s and opens dir again with the given SettleDelay.
func reopen(t *testing.T, s *Store, dir string, settleDelay time.Duration) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true, SettleDelay: settleDelay})
	if err != nil {
		t.Fatal(err)
	}
	return s2
}
