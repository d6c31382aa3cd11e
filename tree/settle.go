package tree

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Settling a bulk load.
//
// Pebble moves values of valueSepMin bytes or more to blob files when it
// flushes a memtable, and in a compaction whose inputs refer to no blob
// file yet; any other compaction carries values as they are. A bulk load's
// ingested sstables hold their nodes inline, so once the first of them has
// been compacted (its output refers to blob files), the nodes of the later
// ones stay inline in sstables for good: about a third of a cloned 1M-record
// tree. Such values fill data blocks one node to a block, so lookups among
// them (a walk's HasNodes, a cold read) read whole nodes from disk, and the
// block cache holds few of them.
//
// settle writes those inline node and blob values again through an ordinary
// write, whose flush moves them to blob files, then compacts, which drops
// the inline versions. Values are content addressed, so writing one again
// changes nothing a reader sees. A commit that ingested schedules a settle
// settleDelay later, in the background (scheduleSettle); Compact settles
// first, at once.

// valueSepMin is the value size from which Pebble separates values (see
// pebbleOptions).
const valueSepMin = 256

// settleDelay is how long after a bulk load's commit its settle starts: a
// bulk load is often followed at once by more work on the same data (a
// sync's commit, the first reads), which it should not compete with. Each
// further bulk commit postpones it. A variable for tests.
var settleDelay = time.Second

// settler schedules and serialises a store's settles.
type settler struct {
	mu    sync.Mutex
	timer *time.Timer
	run   sync.Mutex // held while a settle runs
}

// scheduleSettle arranges a settle settleDelay from now, in the background.
func (s *Store) scheduleSettle() {
	s.settler.mu.Lock()
	defer s.settler.mu.Unlock()
	if s.settler.timer != nil {
		s.settler.timer.Reset(settleDelay)
		return
	}
	s.settler.timer = time.AfterFunc(settleDelay, func() {
		s.settler.mu.Lock()
		s.settler.timer = nil
		s.settler.mu.Unlock()
		ctx, stop := s.stopOnClose(context.Background())
		defer stop()
		// A settle that fails (the store closing, a full disk) only leaves
		// values inline: reads stay correct, and the next one retries.
		_, _ = s.settle(ctx)
	})
}

// stopSettle cancels a scheduled settle (Close calls it; one already
// running stops with the store's close signal).
func (s *Store) stopSettle() {
	s.settler.mu.Lock()
	defer s.settler.mu.Unlock()
	if s.settler.timer != nil {
		s.settler.timer.Stop()
		s.settler.timer = nil
	}
}

// settle writes the store's inline node and blob values of valueSepMin
// bytes or more again, so that they move to blob files, and compacts the
// inline versions away. It returns how many values it wrote.
func (s *Store) settle(ctx context.Context) (int, error) {
	s.settler.run.Lock()
	defer s.settler.run.Unlock()
	done, err := s.use()
	if err != nil {
		return 0, err
	}
	defer done()
	n, err := s.rewriteInline(ctx)
	if err != nil || n == 0 {
		return n, err
	}
	if err := s.db.Flush(); err != nil {
		return n, err
	}
	return n, s.db.Compact(ctx, []byte{prefixBlob}, []byte{prefixNode + 1}, true) // 'b' < 'd' < 'n'
}

// rewriteInline is settle's write. It holds off GC, as a batch does: GC
// must not delete a node that is about to be written again.
func (s *Store) rewriteInline(ctx context.Context) (int, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	n := 0
	for _, pfx := range []byte{prefixNode, prefixBlob} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfx}, UpperBound: []byte{pfx + 1}})
		if err != nil {
			return n, err
		}
		for it.First(); it.Valid(); it.Next() {
			lv := it.LazyValue()
			if lv.Fetcher != nil || len(lv.ValueOrHandle) < valueSepMin {
				continue // in a blob file already, or small enough to stay inline
			}
			if err = s.setChunked(ctx, &b, it.Key(), lv.ValueOrHandle); err != nil {
				break
			}
			n++
		}
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, err
		}
	}
	return n, b.Commit(pebble.NoSync) // made durable by settle's flush
}
