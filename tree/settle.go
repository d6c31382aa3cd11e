package tree

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
// changes nothing a reader sees. A commit that ingested marks the store
// unsettled and schedules a settle Options.SettleDelay later, in the background
// (scheduleSettle); Open schedules one for a store it finds marked;
// Settle settles at once, and so does Compact.

// valueSepMin is the value size from which Pebble separates values (see
// pebbleOptions).
const valueSepMin = 256

// defaultSettleDelay is Options.SettleDelay's default: a bulk load is
// often followed at once by more work on the same data (a sync's commit,
// the first reads), which its settle should not compete with.
const defaultSettleDelay = time.Second

// settler schedules and serialises a store's settles.
type settler struct {
	mu    sync.Mutex
	timer *time.Timer
	run   sync.Mutex   // held while a settle runs
	gen   atomic.Int64 // counts commits that ingested
}

// A store that a bulk load left unsettled says so in its metadata
// (metaUnsettled, written by the ingesting commit), so that a process that
// exits before its settle ran (a command-line clone or import) leaves the
// settle to the next Open, or to Settle.

// scheduleSettle arranges a settle s.settleDelay from now, in the
// background, unless background settles are off or the store is closing.
// A later call replaces an earlier one that has not started.
func (s *Store) scheduleSettle() {
	if s.settleDelay < 0 {
		return
	}
	s.settler.mu.Lock()
	defer s.settler.mu.Unlock()
	select {
	case <-s.closed:
		return // Close has stopped settles (stopSettle runs after this)
	default:
	}
	if s.settler.timer != nil {
		s.settler.timer.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(s.settleDelay, func() {
		// settler.mu is held until t is recorded, so this check sees it;
		// a timer that was replaced or stopped meanwhile does nothing.
		s.settler.mu.Lock()
		current := s.settler.timer == t
		if current {
			s.settler.timer = nil
		}
		s.settler.mu.Unlock()
		if !current {
			return
		}
		ctx, stop := s.stopOnClose(context.Background())
		defer stop()
		// A settle that fails (the store closing, a full disk) only leaves
		// values inline: reads stay correct, and the store stays marked.
		_, _ = s.settle(ctx, false)
	})
	s.settler.timer = t
}

// stopSettle cancels a scheduled settle (one already running stops with
// the store's close signal).
func (s *Store) stopSettle() {
	s.settler.mu.Lock()
	defer s.settler.mu.Unlock()
	if s.settler.timer != nil {
		s.settler.timer.Stop()
		s.settler.timer = nil
	}
}

// Settle settles a store that a bulk load (an initial clone, an import)
// left unsettled, now, instead of in the background: it moves the nodes
// that the load left inline in sstables to blob files, so that later
// lookups and walks read keys rather than whole nodes. It does nothing on
// a settled store. An open store settles on its own about a second after
// a bulk load, and when it is opened unsettled; call Settle before exiting
// from a short-lived process that bulk-loaded, or to wait for it.
func (s *Store) Settle(ctx context.Context) error {
	s.stopSettle()
	if _, err := s.settle(ctx, false); err != nil {
		return fmt.Errorf("settle %s: %w", s.dir, err)
	}
	return nil
}

// Unsettled reports whether a bulk load left the store unsettled (see
// Settle).
func (s *Store) Unsettled() (bool, error) {
	_, err := s.getMeta(metaUnsettled)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// settle writes the store's inline node and blob values of valueSepMin
// bytes or more again, so that they move to blob files, and compacts the
// inline versions away; then it clears the store's unsettled mark unless a
// bulk load committed meanwhile. Unless force, it does nothing on a store
// that is not marked. It returns how many values it wrote.
func (s *Store) settle(ctx context.Context, force bool) (int, error) {
	return s.settleThen(ctx, force, true)
}

// settleThen is settle; compact false leaves the compaction of the
// rewritten values to the caller (Compact, which compacts everything next).
func (s *Store) settleThen(ctx context.Context, force, compact bool) (int, error) {
	s.settler.run.Lock()
	defer s.settler.run.Unlock()
	done, err := s.use()
	if err != nil {
		return 0, err
	}
	defer done()
	gen := s.settler.gen.Load()
	marked, err := s.Unsettled()
	if err != nil {
		return 0, err
	}
	if !marked && !force {
		return 0, nil
	}
	n, err := s.rewriteInline(ctx)
	if err != nil {
		return n, err
	}
	if n > 0 {
		if err := s.db.Flush(); err != nil {
			return n, err
		}
		if compact {
			if err := s.db.Compact(ctx, []byte{prefixBlob}, []byte{prefixNode + 1}, true); err != nil { // 'b' < 'd' < 'n'
				return n, err
			}
		}
	}
	if marked {
		// Under the commit lock, which an ingesting commit holds while it
		// counts itself and writes the mark, so that a load committed
		// after this settle's rewrite keeps its mark.
		s.commit.Lock()
		defer s.commit.Unlock()
		if s.settler.gen.Load() == gen {
			if err := s.db.Delete(metaKey(metaUnsettled), s.wopts); err != nil {
				return n, err
			}
		}
	}
	return n, nil
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
			err = dbErr(cerr)
		}
		if err != nil {
			return n, err
		}
	}
	return n, b.Commit(pebble.NoSync) // made durable by settle's flush
}
