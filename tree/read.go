package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// Get returns the value of key in the tree at root, reading an out-of-line
// value whole. A missing key gives an error wrapping ErrNotFound. An inline
// value may alias the node cache: the caller must not modify it (Lookup
// returns a copy).
func (s *Store) Get(ctx context.Context, root node.Hash, key []byte) ([]byte, error) {
	v, err := s.GetValue(ctx, root, key)
	if err != nil {
		return nil, err
	}
	return s.ReadValue(ctx, v)
}

// GetValue returns the stored form of key's value in the tree at root.
//
// Branches come from the node cache (which keeps them before leaves). At
// the leaf, a row the cache kept from an earlier read of the key in the
// same leaf answers first; otherwise the leaf is read (from the cache or
// the store) and the answer is kept as a row, so keys read again stay
// cached even when their leaves do not (see nodeCache).
func (s *Store) GetValue(ctx context.Context, root node.Hash, key []byte) (node.Value, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	n, err := s.Node(ctx, root)
	if err != nil {
		return node.Value{}, err
	}
	for !n.IsLeaf() {
		i := n.Search(key)
		if i == n.Len() {
			return node.Value{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
		}
		h, _ := n.Child(i)
		if n.Level() == 1 {
			return s.leafValue(ctx, h, key)
		}
		child, err := s.Node(ctx, h)
		if err != nil {
			return node.Value{}, err
		}
		if child.Level() != n.Level()-1 {
			return node.Value{}, fmt.Errorf("get %q: node %s: %w (level %d under level %d)", key, h, node.ErrCorrupt, child.Level(), n.Level())
		}
		n = child
	}
	v, ok := findInLeaf(n, key)
	if !ok {
		return node.Value{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return v, nil
}

// leafValue returns key's stored value in leaf h, from the row cache or
// the leaf, and caches the row. A leaf the cache lacks is decoded and
// cached only if a point read missed it before (the cache keeps a mark,
// a row with an empty key); on its first miss it is searched in Pebble's
// buffer (findStored), since one point read of each of many leaves would
// otherwise fill the cache with leaves read once, each costing a copy and
// a decode.
func (s *Store) leafValue(ctx context.Context, h node.Hash, key []byte) (node.Value, error) {
	v, found, ok := s.cache.row(h, key)
	if ok {
		if !found {
			return node.Value{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
		}
		return v, nil
	}
	gen := s.cache.generation()
	if e := s.cache.entry(h); e.n == nil && s.remote == nil && !s.cache.seen(h) {
		var err error
		if v, found, err = s.findStored(ctx, h, key); err != nil {
			return node.Value{}, err
		}
		s.cache.markSeenIfGen(h, gen)
	} else {
		leaf := e.n
		if leaf == nil {
			var err error
			if leaf, err = s.Node(ctx, h); err != nil {
				return node.Value{}, err
			}
		}
		if !leaf.IsLeaf() {
			return node.Value{}, fmt.Errorf("get %q: node %s: %w (level %d under level 1)", key, h, node.ErrCorrupt, leaf.Level())
		}
		v, found = findInLeaf(leaf, key)
	}
	s.cache.addRowIfGen(h, key, v, found, gen)
	if !found {
		return node.Value{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return v, nil
}

// findStored reads leaf h from the store and returns key's stored value in
// it (an inline value copied out), without decoding the leaf or caching
// it. The stored bytes, or the node a delta rebuilds, are checked against
// h first, as Node checks them.
func (s *Store) findStored(ctx context.Context, h node.Hash, key []byte) (node.Value, bool, error) {
	if err := ctx.Err(); err != nil {
		return node.Value{}, false, err
	}
	done, err := s.use()
	if err != nil {
		return node.Value{}, false, err
	}
	defer done()
	raw, closer, err := s.db.Get(nodeKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		raw, closer, err = s.db.Get(deltaKey(h))
	}
	if errors.Is(err, pebble.ErrNotFound) {
		return node.Value{}, false, fmt.Errorf("store %s: node %s: %w", s.dir, h, node.ErrNotFound)
	}
	if err != nil {
		return node.Value{}, false, fmt.Errorf("store %s: read node %s: %w", s.dir, h, dbErr(err))
	}
	defer closer.Close()
	if isDelta(raw) {
		if raw, err = s.undelta(ctx, h, raw); err != nil {
			return node.Value{}, false, err
		}
	} else if got := s.alg.Sum(raw); got != h {
		return node.Value{}, false, fmt.Errorf("store %s: node %s: %w: stored bytes hash to %s", s.dir, h, node.ErrCorrupt, got)
	}
	v, found, err := node.FindInLeaf(raw, key)
	if err != nil {
		return node.Value{}, false, fmt.Errorf("store %s: node %s: %w", s.dir, h, err)
	}
	if v.Inline != nil {
		v.Inline = bytes.Clone(v.Inline)
	}
	return v, found, nil
}

// findInLeaf returns key's stored value in leaf n, if n holds key.
func findInLeaf(n *node.Node, key []byte) (node.Value, bool) {
	i := n.Search(key)
	if i == n.Len() || !bytes.Equal(n.Key(i), key) {
		return node.Value{}, false
	}
	return n.Value(i), true
}

// Count returns the number of records in the tree at root, from the root's
// subtree counts (one node read).
func (s *Store) Count(ctx context.Context, root node.Hash) (uint64, error) {
	n, err := s.Node(ctx, root)
	if err != nil {
		return 0, err
	}
	return n.Count(), nil
}

// Range selects keys in [Start, End). A nil Start is unbounded below and a
// nil End unbounded above.
type Range struct {
	Start, End []byte
}

// PrefixRange returns the Range of keys that begin with prefix.
func PrefixRange(prefix []byte) Range {
	return Range{Start: prefix, End: PrefixEnd(prefix)}
}

// PrefixEnd returns the least key greater than every key with the prefix,
// or nil if there is none (the prefix is empty or all 0xFF).
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Contains reports whether key lies in r.
func (r Range) Contains(key []byte) bool {
	return (r.Start == nil || bytes.Compare(key, r.Start) >= 0) && (r.End == nil || bytes.Compare(key, r.End) < 0)
}

// Iterator walks the records of a tree in ascending key order. It holds off
// garbage collection until closed. Not safe for concurrent use.
type Iterator struct {
	ctx   context.Context
	s     *Store
	r     Range
	c     *cursor
	i     int
	err   error
	done  bool
	ended bool
}

// NewIterator returns an iterator over the records of the tree at root
// within r. Call Next before reading the first record, and Close when done.
func (s *Store) NewIterator(ctx context.Context, root node.Hash, r Range) *Iterator {
	s.gc.RLock()
	it := &Iterator{ctx: ctx, s: s, r: r, i: -1}
	load := func(h node.Hash) (*node.Node, error) { return s.Node(ctx, h) }
	rn, err := s.Node(ctx, root)
	if err != nil {
		it.err, it.done = err, true
		return it
	}
	start := r.Start
	if start == nil {
		start = []byte{}
	}
	it.c, it.err = seek(load, root, rn, 0, start)
	if it.err != nil {
		it.done = true
		return it
	}
	it.i = it.c.node().Search(start) - 1
	return it
}

// Next advances to the next record and reports whether there is one.
func (it *Iterator) Next() bool {
	if it.done {
		return false
	}
	it.i++
	for it.i >= it.c.node().Len() {
		if err := it.ctx.Err(); err != nil {
			it.err, it.done = err, true
			return false
		}
		ok, err := it.c.next(func(h node.Hash) (*node.Node, error) { return it.s.Node(it.ctx, h) })
		if err != nil || !ok {
			it.err, it.done = err, true
			return false
		}
		it.i = 0
	}
	if it.r.End != nil && bytes.Compare(it.Key(), it.r.End) >= 0 {
		it.done = true
		return false
	}
	return true
}

// Key returns the current key. It is valid until Close and must not be modified.
func (it *Iterator) Key() []byte { return it.c.node().Key(it.i) }

// Value returns the current value in stored form.
func (it *Iterator) Value() node.Value { return it.c.node().Value(it.i) }

// Err returns the error that stopped the iteration, if any.
func (it *Iterator) Err() error { return it.err }

// Close releases the iterator.
func (it *Iterator) Close() error {
	if !it.ended {
		it.ended = true
		it.done = true
		it.s.gc.RUnlock()
	}
	return it.err
}

// Update applies edits to the tree named by ref (the empty tree if unset)
// and moves ref to the new root, atomically, retrying if another writer
// moves ref meanwhile. It returns the new root.
func (s *Store) Update(ctx context.Context, ref string, edits []Edit) (node.Hash, error) {
	for {
		// Start the batch before reading the ref: the batch holds off
		// garbage collection, so the root read stays stored while it is
		// edited even if another writer moves the ref meanwhile (the commit
		// then fails with ErrRefMoved and the loop retries).
		b, err := s.NewBatch()
		if err != nil {
			return node.Hash{}, err
		}
		old, ok, err := s.Ref(ref)
		if err != nil {
			b.Discard()
			return node.Hash{}, err
		}
		root := old
		if !ok {
			root = s.EmptyRoot()
		}
		newRoot, err := b.Apply(ctx, root, edits)
		if err != nil {
			b.Discard()
			return node.Hash{}, err
		}
		b.ExpectRef(ref, old, ok)
		b.SetRef(ref, newRoot)
		err = b.Commit(ctx)
		if errors.Is(err, ErrRefMoved) {
			continue
		}
		if err != nil {
			return node.Hash{}, err
		}
		return newRoot, nil
	}
}

// CountRange returns the number of records of the tree at root within r,
// reading O(height) nodes per range edge: subtrees wholly inside r count by
// their stored subtree counts, and only the nodes straddling r's edges are
// descended. It never reads a subtree wholly outside r, so it works on a
// partial replica's pruned tree for ranges inside its scope.
func (s *Store) CountRange(ctx context.Context, root node.Hash, r Range) (uint64, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	n, err := s.Node(ctx, root)
	if err != nil {
		return 0, err
	}
	return s.countRange(ctx, n, nil, nil, true, r)
}

// countRange counts the records of n (whose keys k satisfy lo < k ≤ hi; a
// nil lo or hi is unbounded; rightEdge marks the tree's right edge, where
// the last child also holds keys above its separator) within r.
func (s *Store) countRange(ctx context.Context, n *node.Node, lo, hi []byte, rightEdge bool, r Range) (uint64, error) {
	if n.IsLeaf() {
		var c uint64
		for i := n.Search(r.Start); i < n.Len() && r.Contains(n.Key(i)); i++ {
			c++
		}
		return c, nil
	}
	var total uint64
	for i := 0; i < n.Len(); i++ {
		clo := lo
		if i > 0 {
			clo = n.Key(i - 1)
		}
		chi := n.Key(i)
		edge := rightEdge && i == n.Len()-1
		if edge {
			chi = nil
		}
		// Skip children wholly outside r.
		if r.End != nil && clo != nil && bytes.Compare(clo, r.End) >= 0 {
			break
		}
		if r.Start != nil && chi != nil && bytes.Compare(chi, r.Start) < 0 {
			continue
		}
		h, cnt := n.Child(i)
		inside := (r.Start == nil || (clo != nil && bytes.Compare(clo, r.Start) >= 0)) &&
			(r.End == nil || (chi != nil && bytes.Compare(chi, r.End) < 0))
		if inside {
			total += cnt
			continue
		}
		child, err := s.Node(ctx, h)
		if err != nil {
			return 0, err
		}
		c, err := s.countRange(ctx, child, clo, chi, edge, r)
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}
