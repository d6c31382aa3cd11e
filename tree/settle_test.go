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
	old := settleDelay
	settleDelay = time.Hour // settled by hand below
	t.Cleanup(func() { settleDelay = old })
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	root := bulkLoad(t, s, 3000)
	before := inlineValues(t, s)
	if before == 0 {
		t.Fatal("a bulk load with compactions off left no value inline")
	}
	n, err := s.settle(context.Background())
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
	s = reopen(t, s, dir)
	defer s.Close()
	if _, err := s.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	if left := inlineValues(t, s); left != 0 {
		t.Errorf("%d values inline after reopening", left)
	}
}

// reopen closes s and opens dir again, closing it at the end of the test.
func reopen(t *testing.T, s *Store, dir string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

// TestBulkCommitSchedulesSettle: after a bulk load's commit, the store
// settles on its own; Compact settles at once; Close stops a settle that
// has not started without error.
func TestBulkCommitSchedulesSettle(t *testing.T) {
	old := settleDelay
	t.Cleanup(func() { settleDelay = old })

	settleDelay = 10 * time.Millisecond
	s := openTest(t, smallConfig)
	bulkLoad(t, s, 3000)
	deadline := time.Now().Add(20 * time.Second)
	for inlineValues(t, s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d values still inline 20 s after the bulk commit", inlineValues(t, s))
		}
		time.Sleep(20 * time.Millisecond)
	}

	settleDelay = time.Hour
	s2 := openTest(t, smallConfig)
	root := bulkLoad(t, s2, 3000)
	if err := s2.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := inlineValues(t, s2); left != 0 {
		t.Errorf("%d values inline after Compact", left)
	}
	if _, err := s2.Verify(context.Background(), root); err != nil {
		t.Fatal(err)
	}

	s3 := openTest(t, smallConfig)
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
