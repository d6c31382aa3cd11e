package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// GCStats reports what a garbage collection did.
type GCStats struct {
	Roots        int   // retained roots marked from
	LiveNodes    int   // nodes reachable from them
	LiveBlobs    int   // value blobs reachable from them
	DeletedNodes int   // unreachable nodes deleted
	DeletedBlobs int   // unreachable blobs deleted
	DeletedBytes int64 // bytes of deleted nodes and blobs
	LiveBytes    int64 // bytes of the live nodes' and blobs' stored records
	// RewrittenWhole counts live delta-stored nodes whose base was dead,
	// which GC stored whole before deleting the base.
	RewrittenWhole int
	// Copied reports whether the garbage was large enough for GC to copy
	// the live nodes and blobs (see gcCopyFraction), which it does after
	// the sweep unless stopped first.
	Copied bool
}

// GC deletes every node and value blob that no ref reaches, plus any extra
// roots given (roots that live sessions pin without a ref), then compacts
// the freed space. It waits until no batch, iterator, read or PreventGC
// hold is open, and blocks new ones while it marks and sweeps; the copy
// and compaction that follow run without blocking them. Waiting never blocks
// them (see lockGC), so a goroutine that holds an iterator may still read
// and write while a GC waits. A second GC waits until the first has
// finished, compaction included. Close stops a GC in flight (it returns an
// error wrapping ErrClosed).
//
// The sweep deletes unreachable nodes from the highest level down, and
// value indexes before chunks, in batches applied in order. So if GC is
// cancelled or the process dies mid-sweep, every node still stored still
// heads a complete subtree — the invariant sync's walk relies on.
func (s *Store) GC(ctx context.Context, extraRoots ...node.Hash) (GCStats, error) {
	return s.gcScope(ctx, nil, extraRoots, nil)
}

// GCScope is GC for a partial replica, which holds its trees pruned to sc
// (see VerifyScope): it marks from every root only the nodes whose key
// interval overlaps sc and the value blobs of keys in sc, and deletes the
// rest, so records outside sc that the store still held are dropped.
func (s *Store) GCScope(ctx context.Context, sc Scope, extraRoots ...node.Hash) (GCStats, error) {
	return s.gcScope(ctx, sc, extraRoots, nil)
}

// GCScopeAt is GCScope that runs only while ref still points at root: it
// checks under the GC lock, which every write holds shared, and fails with
// ErrRefMoved otherwise, deleting nothing. A sync that narrowed a replica
// uses it, so that a write which landed outside the new scope since the
// sync's commit is never pruned away.
func (s *Store) GCScopeAt(ctx context.Context, sc Scope, ref string, root node.Hash, extraRoots ...node.Hash) (GCStats, error) {
	return s.gcScope(ctx, sc, extraRoots, &refAt{ref, root})
}

// refAt is a ref's expected root.
type refAt struct {
	ref  string
	root node.Hash
}

// afterGCUnlock, when set by a test, runs after a GC that deleted something
// has released the GC lock, before its copy and compaction, with the GC's
// context.
var afterGCUnlock func(ctx context.Context)

func (s *Store) gcScope(ctx context.Context, sc Scope, extraRoots []node.Hash, at *refAt) (st GCStats, err error) {
	done, err := s.use()
	if err != nil {
		return st, err
	}
	defer done()
	ctx, stop := s.stopOnClose(ctx)
	defer stop()
	defer func() {
		if err != nil && errors.Is(context.Cause(ctx), ErrClosed) {
			err = fmt.Errorf("%w (gc %s stopped: %v)", ErrClosed, s.dir, err)
		}
	}()
	// One GC at a time: a second one waits here, before it takes the GC
	// lock, until the first has compacted.
	select {
	case s.gcRun <- struct{}{}:
	case <-ctx.Done():
		return st, fmt.Errorf("gc %s: wait for another gc: %w", s.dir, ctx.Err())
	}
	defer func() { <-s.gcRun }()

	var cp *liveCopy
	st, cp, err = s.collect(ctx, sc, extraRoots, at)
	if err != nil || st.DeletedNodes+st.DeletedBlobs == 0 {
		return st, err
	}
	// The rest only returns space to the file system: batches, reads and
	// syncs go on meanwhile. The copy writes again, unchanged, records that
	// were live at the mark; nothing but GC deletes a record, so they are
	// still stored. The compaction drops the deleted keys (and the old
	// versions of the copied ones), so that blob files lose their
	// references and Pebble deletes them.
	if afterGCUnlock != nil {
		afterGCUnlock(ctx)
	}
	if cp != nil {
		if err := s.rewriteLive(ctx, cp.nodes, cp.blobs, cp.skip); err != nil {
			return st, fmt.Errorf("gc %s: copy live values: %w", s.dir, err)
		}
	}
	if err := s.db.Compact(ctx, []byte{prefixBlob}, []byte{prefixNode + 1}, true); err != nil { // 'b' < 'd' < 'n'
		return st, fmt.Errorf("gc %s: compact: %w", s.dir, err)
	}
	s.awaitDeletions(ctx)
	return st, nil
}

// deleteRank orders the deletion of a dead record with prefix p and value
// v: lower ranks go first. Nodes go from the highest level down, and within
// a level deltas before whole nodes, so that a sweep cut short never leaves
// a delta whose base it deleted (HasNode would vouch for an unreadable
// node); a delta's base has the delta's level. Value indexes go before
// chunks, and anything unrecognised last.
func deleteRank(p byte, v []byte) int {
	switch {
	case p != prefixBlob && len(v) >= 2:
		rank := -2 * int(v[1])
		if p == prefixDelta {
			rank--
		}
		return rank
	case p == prefixBlob && len(v) > 0:
		if _, _, err := node.DecodeValueIndex(node.Alg(v[0]), v); err == nil {
			return 0
		}
	}
	return 1
}

// attributeRank is deleteRank from a separated value's short attribute
// (shortAttribute); ok is false if the attribute does not tell.
func attributeRank(p byte, a pebble.ShortAttribute) (rank int, ok bool) {
	switch {
	case a == 0:
		return 0, false
	case p == prefixBlob:
		return int(a) - 1, a <= 2 // 1: value index (rank 0), 2: chunk (rank 1)
	case a == 7:
		return 0, false // level 6 or above: the value tells which
	}
	rank = -2 * (int(a) - 1)
	if p == prefixDelta {
		rank--
	}
	return rank, true
}

// stopOnClose returns a context that is also cancelled, with cause
// ErrClosed, when Close begins. stop releases it.
func (s *Store) stopOnClose(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ended := make(chan struct{})
	go func() {
		select {
		case <-s.closed:
			cancel(ErrClosed)
		case <-ended:
		}
	}()
	return ctx, func() { close(ended); cancel(nil) }
}

// liveCopy is what a GC copies after its sweep (see rewriteLive): the live
// nodes and blobs, but the nodes in skip.
type liveCopy struct {
	nodes, blobs, skip map[node.Hash]struct{}
}

// collect marks and sweeps under the exclusive GC lock. If the garbage
// justifies copying the live values, it returns what to copy.
func (s *Store) collect(ctx context.Context, sc Scope, extraRoots []node.Hash, at *refAt) (GCStats, *liveCopy, error) {
	var st GCStats
	if err := s.lockGC(ctx); err != nil {
		return st, nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	defer s.gc.Unlock()
	if at != nil {
		if s.pendingWork() {
			return st, nil, fmt.Errorf("gc %s: ref %q has working-set edits to apply: %w", s.dir, at.ref, ErrRefMoved)
		}
		if h, ok, err := s.rawRef(at.ref); err != nil {
			return st, nil, err
		} else if !ok || h != at.root {
			return st, nil, fmt.Errorf("gc %s: ref %q: %w", s.dir, at.ref, ErrRefMoved)
		}
	}

	refs, err := s.Refs()
	if err != nil {
		return st, nil, err
	}
	roots := extraRoots
	for _, h := range refs {
		roots = append(roots, h)
	}
	liveNodes := map[node.Hash]struct{}{}
	liveBlobs := map[node.Hash]struct{}{}
	for _, r := range roots {
		st.Roots++
		mark := s.mark
		if sc != nil {
			mark = func(ctx context.Context, r node.Hash, ln, lb map[node.Hash]struct{}) error {
				return s.markScope(ctx, r, sc, ln, lb)
			}
		}
		if err := mark(ctx, r, liveNodes, liveBlobs); err != nil {
			return st, nil, fmt.Errorf("gc %s: mark from root %s: %w", s.dir, r, err)
		}
	}
	st.LiveNodes, st.LiveBlobs = len(liveNodes), len(liveBlobs)
	// Readers that do not hold the GC lock (Store.Node) may cache a node
	// the sweep is deleting; emptying the cache after the sweep, with a new
	// generation, and before the lock is released (defers run last in,
	// first out), keeps the rule that a cached node is a stored node.
	defer s.cache.invalidate()

	skip, err := s.sweep(ctx, liveNodes, liveBlobs, &st)
	if err != nil {
		return st, nil, fmt.Errorf("gc %s: sweep: %w", s.dir, err)
	}
	if !st.Copied {
		return st, nil, nil
	}
	return st, &liveCopy{nodes: liveNodes, blobs: liveBlobs, skip: skip}, nil
}

func (s *Store) mark(ctx context.Context, root node.Hash, liveNodes, liveBlobs map[node.Hash]struct{}) error {
	stack := []node.Hash{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := liveNodes[h]; ok {
			continue
		}
		liveNodes[h] = struct{}{}
		n, err := s.Node(ctx, h)
		if err != nil {
			return err
		}
		for i := 0; i < n.Len(); i++ {
			if n.IsLeaf() {
				if err := s.markValue(ctx, n.Value(i), liveBlobs); err != nil {
					return err
				}
				continue
			}
			c, _ := n.Child(i)
			stack = append(stack, c)
		}
	}
	return nil
}

// markValue marks an out-of-line value's index and chunk blobs live.
func (s *Store) markValue(ctx context.Context, v node.Value, liveBlobs map[node.Hash]struct{}) error {
	if !v.IsRef {
		return nil
	}
	if _, ok := liveBlobs[v.Ref]; ok {
		return nil
	}
	liveBlobs[v.Ref] = struct{}{}
	idx, err := s.Blob(ctx, v.Ref)
	if err != nil {
		return err
	}
	chunks, _, err := node.DecodeValueIndex(s.alg, idx)
	if err != nil {
		return fmt.Errorf("value index %s: %w", v.Ref, err)
	}
	for _, c := range chunks {
		liveBlobs[c.Hash] = struct{}{}
	}
	return nil
}

// markScope marks from root the nodes whose key interval overlaps sc (as in
// VerifyScope) and the value blobs of keys in sc.
func (s *Store) markScope(ctx context.Context, root node.Hash, sc Scope, liveNodes, liveBlobs map[node.Hash]struct{}) error {
	type item struct {
		h    node.Hash
		lo   []byte
		open bool
	}
	seen := map[string]struct{}{} // a hash may be pruned differently at another position
	stack := []item{{h: root, open: true}}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		id := fmt.Sprintf("%x/%t/%q/%t", it.h.String(), it.lo == nil, it.lo, it.open)
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		liveNodes[it.h] = struct{}{}
		n, err := s.Node(ctx, it.h)
		if err != nil {
			return err
		}
		for i := 0; i < n.Len(); i++ {
			if n.IsLeaf() {
				if !sc.Contains(n.Key(i)) {
					continue
				}
				if err := s.markValue(ctx, n.Value(i), liveBlobs); err != nil {
					return err
				}
				continue
			}
			lo := it.lo
			if i > 0 {
				lo = n.Key(i - 1)
			}
			open := it.open && i == n.Len()-1
			hi := n.Key(i)
			if open {
				hi = nil
			}
			if !sc.Overlaps(lo, hi) {
				continue
			}
			c, _ := n.Child(i)
			stack = append(stack, item{h: c, lo: lo, open: open})
		}
	}
	return nil
}

// sweepBatchBytes is the size of one sweep batch; tests lower it.
var sweepBatchBytes = 4 << 20

// afterSweepBatch, when set by a test, runs after each committed sweep batch.
var afterSweepBatch func()

// lockGC takes the GC lock exclusively by polling TryLock. A blocking Lock
// would make every new RLock wait behind it, so a goroutine that already
// holds a read lock (an open iterator or batch) and takes another would
// deadlock; polling leaves readers free until the moment GC gets the lock.
func (s *Store) lockGC(ctx context.Context) error {
	wait := time.Millisecond
	for !s.gc.TryLock() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
	return nil
}

// PreventGC keeps garbage collection from running until release is called.
// Use it around work that stores nodes before any ref reaches them, such as
// a sync that commits fetched subtrees first and moves its refs last.
// release is idempotent.
func (s *Store) PreventGC() (release func()) {
	s.gc.RLock()
	var once sync.Once
	return func() { once.Do(s.gc.RUnlock) }
}

// gcCopyFraction decides whether GC copies the live values: it does when
// the bytes it deletes are at least this fraction of the live bytes (that
// is, when the garbage is at least a fifth of what the sweep saw). Copying
// costs a write of the whole live set, so one dead node must not trigger
// it. Below the threshold the garbage left in Pebble's blob files is at
// most a fifth of their values, and Pebble's own blob-file rewriting
// (ValueSeparationPolicy.TargetGarbageRatio 0.25 in pebbleOptions)
// reclaims blob files once their garbage passes a quarter, in the
// background.
const gcCopyFraction = 0.25

// sweep deletes the nodes and blobs that are not live, dependents before
// what they depend on: nodes by descending level (deltas before whole
// nodes within a level), then blobs, value indexes before chunks. Live
// nodes stored as deltas of a dead base are first rewritten whole, and
// their delta records deleted before anything else. It fills in st's
// deletion and rewrite counts, and sets st.Copied if the dead bytes
// justify copying the live records (gcCopyFraction), which the caller
// then does (rewriteLive) but for the nodes in skip: those just rewritten.
func (s *Store) sweep(ctx context.Context, liveNodes, liveBlobs map[node.Hash]struct{}, st *GCStats) (skip map[node.Hash]struct{}, err error) {
	// Nodes live under two prefixes: whole ones under prefixNode, deltas
	// under prefixDelta. Both are ranked together, so that one order
	// covers them: dependents before what they depend on. Blobs are
	// deleted after every node (a dead leaf names its value's blobs).
	// Ranks order deletions (keys with their prefix): lower ranks go first.
	nodeRanks := map[int][][]byte{}
	blobRanks := map[int][][]byte{}
	// rewrite lists live nodes stored as deltas whose base is dead: they
	// are stored whole, and their delta records deleted, before any base.
	var rewrite []node.Hash
	for _, p := range []byte{prefixDelta, prefixNode, prefixBlob} {
		live, byRank := liveNodes, nodeRanks
		if p == prefixBlob {
			live, byRank = liveBlobs, blobRanks
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			return nil, err
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			h, ok := s.alg.HashOf(k[1:])
			if !ok {
				continue
			}
			if _, ok := live[h]; ok {
				// The length needs no read of a separated value.
				lv := it.LazyValue()
				st.LiveBytes += int64(lv.Len())
				if p == prefixDelta {
					v, err := it.ValueAndErr()
					if err != nil {
						break // it.Error reports it
					}
					if len(v) < deltaHeader(s.alg) || !isDelta(v) {
						it.Close()
						return nil, fmt.Errorf("delta record %s: %w", h, node.ErrCorrupt)
					}
					if base, _ := s.alg.HashOf(v[2:deltaHeader(s.alg)]); !isLive(live, base) {
						rewrite = append(rewrite, h)
					}
				}
				continue
			}
			// The rank usually comes with the reference to a separated
			// value (shortAttribute), which saves reading the value back
			// from its blob file.
			lv := it.LazyValue()
			rank, ok := 0, false
			if lv.Fetcher != nil {
				rank, ok = attributeRank(p, lv.Fetcher.Attribute.ShortAttribute)
			}
			if !ok {
				v, err := it.ValueAndErr()
				if err != nil {
					break
				}
				rank = deleteRank(p, v)
			}
			byRank[rank] = append(byRank[rank], bytes.Clone(k))
			if p == prefixBlob {
				st.DeletedBlobs++
			} else {
				st.DeletedNodes++
			}
			st.DeletedBytes += int64(lv.Len())
		}
		err = it.Error()
		it.Close()
		if err != nil {
			return nil, dbErr(err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if st.DeletedNodes+st.DeletedBlobs == 0 {
		return nil, nil
	}
	// Synced before any deletion: whatever of the deletions survives a
	// crash comes after these in Pebble's log.
	if err := s.rewriteWhole(ctx, rewrite); err != nil {
		return nil, err
	}
	st.RewrittenWhole = len(rewrite)
	skip = make(map[node.Hash]struct{}, len(rewrite))
	for _, h := range rewrite {
		skip[h] = struct{}{}
		nodeRanks[math.MinInt] = append(nodeRanks[math.MinInt], deltaKey(h)) // now stored whole
	}
	if err := s.deleteRanked(ctx, nodeRanks); err != nil {
		return nil, err
	}
	if err := s.deleteRanked(ctx, blobRanks); err != nil {
		return nil, err
	}
	st.Copied = float64(st.DeletedBytes) >= gcCopyFraction*float64(st.LiveBytes)
	return skip, nil
}

// deleteRanked deletes the keys of byRank, lower ranks first, in batches
// of sweepBatchBytes committed in order; the last is committed with the
// store's durability.
func (s *Store) deleteRanked(ctx context.Context, byRank map[int][][]byte) error {
	ranks := make([]int, 0, len(byRank))
	for r := range byRank {
		ranks = append(ranks, r)
	}
	sort.Ints(ranks)
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	for _, r := range ranks {
		for _, key := range byRank[r] {
			if err := b.Delete(key, nil); err != nil {
				return err
			}
			if h, ok := s.alg.HashOf(key[1:]); ok {
				s.cache.remove(h)
			}
			if b.Len() > sweepBatchBytes {
				if err := b.Commit(pebble.NoSync); err != nil {
					return err
				}
				b.Close()
				b = s.db.NewBatch()
				if afterSweepBatch != nil {
					afterSweepBatch()
				}
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
	}
	return b.Commit(s.wopts)
}

// Compact compacts the whole store and waits for the files it made
// obsolete to be deleted. Stores do this in the background on their own;
// calling it after a bulk load (an import, an initial clone) settles the
// store at once, so that the reads and writes that follow do not compete
// with compacting the load.
func (s *Store) Compact(ctx context.Context) error {
	done, err := s.use()
	if err != nil {
		return err
	}
	defer done()
	// Settle a bulk load now rather than later: move its inline values to
	// blob files (settle.go), so that this compaction drops their copies.
	s.stopSettle()
	if _, err := s.settleThen(ctx, true, false); err != nil { // the compaction below drops the inline copies
		return fmt.Errorf("compact %s: settle: %w", s.dir, err)
	}
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("compact %s: %w", s.dir, err)
	}
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return fmt.Errorf("compact %s: %w", s.dir, err)
	}
	s.awaitDeletions(ctx)
	return nil
}

// awaitDeletions waits, for a few seconds at most, until Pebble has deleted
// the files that GC's compaction made obsolete, so that the space is back
// when GC returns. Node values live in blob files (value separation): a
// blob file goes once no live key refers to it.
func (s *Store) awaitDeletions(ctx context.Context) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m := s.db.Metrics()
		if m.Table.ObsoleteSize+m.BlobFiles.ObsoleteSize == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rewriteLive writes every live node record (whole and delta) and blob
// again with its value, but the nodes in skip. Node and blob values sit in
// Pebble blob files (value separation), and a blob file's space returns
// only when no key refers to it: after a sweep most files still hold a
// few live values among many dead ones. Writing the live values again
// moves them to new files, and the compaction that follows drops the old
// versions, so every old file goes. This makes such a GC's cost
// proportional to the live data, like a copying collector, and leaves the
// store about the size of a fresh build. GC calls it only when the
// garbage justifies the copy (gcCopyFraction), after the sweep and the
// release of the GC lock: rewriting unchanged records needs no exclusion.
func (s *Store) rewriteLive(ctx context.Context, liveNodes, liveBlobs, skip map[node.Hash]struct{}) error {
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	for _, p := range []byte{prefixDelta, prefixNode, prefixBlob} {
		live := liveNodes
		if p == prefixBlob {
			live = liveBlobs
		}
		if err := s.copyLive(ctx, &b, p, live, skip); err != nil {
			return err
		}
	}
	return b.Commit(pebble.NoSync)
}

// copyLive adds to *b (see setChunked) a Set of every live key under pfx
// but those in skip, with its current value.
func (s *Store) copyLive(ctx context.Context, b **pebble.Batch, pfx byte, live, skip map[node.Hash]struct{}) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfx}, UpperBound: []byte{pfx + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		h, ok := s.alg.HashOf(k[1:])
		if !ok {
			continue
		}
		if _, ok := live[h]; !ok {
			continue
		}
		if _, ok := skip[h]; ok && pfx != prefixBlob {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return dbErr(err)
		}
		if err := s.setChunked(ctx, b, k, v); err != nil {
			return err
		}
	}
	return dbErr(it.Error())
}

// setChunked adds a Set to *b, first committing *b (unsynced) and starting
// a new batch once it holds sweepBatchBytes, so GC's rewrites never build
// one huge batch.
func (s *Store) setChunked(ctx context.Context, b **pebble.Batch, k, v []byte) error {
	if err := (*b).Set(k, v, nil); err != nil {
		return err
	}
	if (*b).Len() <= sweepBatchBytes {
		return nil
	}
	if err := (*b).Commit(pebble.NoSync); err != nil {
		return err
	}
	(*b).Close()
	*b = s.db.NewBatch()
	return ctx.Err()
}

// rewriteWhole stores the nodes hashes, which are stored as deltas of dead
// bases, whole, so that their bases can be deleted. Readers that read a delta just before
// its base goes read the node again (Store.undelta).
func (s *Store) rewriteWhole(ctx context.Context, hashes []node.Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	for _, h := range hashes {
		n, err := s.Node(ctx, h)
		if err != nil {
			return fmt.Errorf("rewrite node %s whole: %w", h, err)
		}
		if err := s.setChunked(ctx, &b, nodeKey(h), n.Raw()); err != nil {
			return err
		}
	}
	// Synced like the deletions that follow: whatever of them survives a
	// crash comes after this in Pebble's log.
	return b.Commit(s.wopts)
}

// DiskSize returns the bytes the store's files use on disk.
func (s *Store) DiskSize() (uint64, error) {
	done, err := s.use()
	if err != nil {
		return 0, err
	}
	defer done()
	return s.db.Metrics().DiskSpaceUsage(), nil
}

func isLive(live map[node.Hash]struct{}, h node.Hash) bool { _, ok := live[h]; return ok }
