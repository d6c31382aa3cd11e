package tree

import (
	"context"
	"fmt"

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
}

// GC deletes every node and value blob that no ref reaches, plus any extra
// roots given (roots that live sessions pin without a ref), then compacts
// the freed space. It waits for open batches, iterators and reads to end,
// and blocks new ones while it runs.
func (s *Store) GC(ctx context.Context, extraRoots ...node.Hash) (GCStats, error) {
	var st GCStats
	done, err := s.use()
	if err != nil {
		return st, err
	}
	defer done()
	s.gc.Lock()
	defer s.gc.Unlock()

	refs, err := s.Refs()
	if err != nil {
		return st, err
	}
	roots := extraRoots
	for _, h := range refs {
		roots = append(roots, h)
	}
	liveNodes := map[node.Hash]struct{}{}
	liveBlobs := map[node.Hash]struct{}{}
	for _, r := range roots {
		st.Roots++
		if err := s.mark(ctx, r, liveNodes, liveBlobs); err != nil {
			return st, fmt.Errorf("gc %s: mark from root %s: %w", s.dir, r, err)
		}
	}
	st.LiveNodes, st.LiveBlobs = len(liveNodes), len(liveBlobs)
	// Readers that do not hold the GC lock (Store.Node) may cache a node
	// the sweep is deleting; emptying the cache after the sweep, with a new
	// generation, keeps the rule that a cached node is a stored node.
	defer s.cache.invalidate()

	for _, pfx := range []byte{prefixNode, prefixBlob} {
		live := liveNodes
		if pfx == prefixBlob {
			live = liveBlobs
		}
		n, bytes, err := s.sweep(ctx, pfx, live)
		if err != nil {
			return st, fmt.Errorf("gc %s: sweep: %w", s.dir, err)
		}
		if pfx == prefixNode {
			st.DeletedNodes = n
		} else {
			st.DeletedBlobs = n
		}
		st.DeletedBytes += bytes
	}
	if st.DeletedNodes+st.DeletedBlobs > 0 {
		if err := s.db.Compact(ctx, []byte{prefixBlob}, []byte{prefixNode + 1}, true); err != nil {
			return st, fmt.Errorf("gc %s: compact: %w", s.dir, err)
		}
	}
	return st, nil
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
				v := n.Value(i)
				if !v.IsRef {
					continue
				}
				if _, ok := liveBlobs[v.Ref]; ok {
					continue
				}
				liveBlobs[v.Ref] = struct{}{}
				idx, err := s.Blob(ctx, v.Ref)
				if err != nil {
					return err
				}
				chunks, _, err := node.DecodeValueIndex(idx)
				if err != nil {
					return fmt.Errorf("value index %s: %w", v.Ref, err)
				}
				for _, c := range chunks {
					liveBlobs[c.Hash] = struct{}{}
				}
				continue
			}
			c, _ := n.Child(i)
			stack = append(stack, c)
		}
	}
	return nil
}

func (s *Store) sweep(ctx context.Context, pfx byte, live map[node.Hash]struct{}) (int, int64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfx}, UpperBound: []byte{pfx + 1}})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	var n int
	var size int64
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+node.HashSize {
			continue
		}
		var h node.Hash
		copy(h[:], k[1:])
		if _, ok := live[h]; ok {
			continue
		}
		if err := b.Delete(k, nil); err != nil {
			return n, size, err
		}
		s.cache.remove(h)
		n++
		size += int64(len(it.Value()))
		if b.Len() > 4<<20 {
			if err := ctx.Err(); err != nil {
				return n, size, err
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				return n, size, err
			}
			b.Close()
			b = s.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return n, size, err
	}
	return n, size, b.Commit(s.wopts)
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
