package diff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// DefaultMaxBatch is the number of nodes Diff asks one Source for in one
// Nodes call when Options.MaxBatch is zero.
const DefaultMaxBatch = 1024

// minMaxBatch is the least usable batch: splitting a segment that needs
// more nodes than the batch allows must shrink it (see split).
const minMaxBatch = 4

// Change is one difference between two trees: Key is present in the old
// tree with value Old (nil if absent) and in the new tree with value New
// (nil if absent). At least one of Old and New is non-nil, and when both
// are they are not Equal.
//
// Key and the values alias the bytes of the nodes they were read from.
// Nodes are immutable, so a Change stays valid indefinitely (after the
// iterator moves on, and after Diff returns), but it must not be modified,
// and holding it keeps its node's buffer alive: clone what you keep long.
type Change struct {
	Key      []byte
	Old, New *node.Value
}

// Kind classifies a Change.
type Kind uint8

// The kinds of Change.
const (
	// Added: the key is only in the new tree.
	Added Kind = iota + 1
	// Removed: the key is only in the old tree.
	Removed
	// Modified: the key is in both trees with different values.
	Modified
)

// String returns "added", "removed" or "modified".
func (k Kind) String() string {
	switch k {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Modified:
		return "modified"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Kind reports whether c adds, removes or modifies its key.
func (c Change) Kind() Kind {
	switch {
	case c.Old == nil:
		return Added
	case c.New == nil:
		return Removed
	default:
		return Modified
	}
}

// Stats counts the work of a Diff or Merge. Counters accumulate: pass a
// fresh Stats, or subtract. A Stats must not be shared by calls running
// concurrently.
type Stats struct {
	// NodesLoaded is the number of nodes asked of the Sources. The empty
	// tree's root is never asked for. A node may be counted twice in the
	// rare case that it straddles a split of a batch (see package doc).
	NodesLoaded int
	// Batches is the number of Nodes calls made.
	Batches int
}

// Options configure Diff and Merge. The zero value diffs everything.
type Options struct {
	// Range restricts the diff to keys in [Range.Start, Range.End); use
	// tree.PrefixRange for the keys with a prefix. Only nodes whose key
	// interval overlaps it are loaded.
	Range tree.Range
	// Stats, when non-nil, is incremented with the work done.
	Stats *Stats
	// MaxBatch bounds the nodes asked of one Source in one Nodes call, and
	// so the decoded nodes Diff holds at once. Zero means DefaultMaxBatch;
	// values below 4 are raised to 4.
	MaxBatch int
	// TrustHashes skips re-hashing every loaded node to check that it is
	// the node asked for, which is about a quarter of a large diff's CPU
	// time. Set it only when the Sources already verify what they return
	// (as a network client must). The checks against the parent (level,
	// key bounds, count) are always made.
	TrustHashes bool
}

func (o *Options) maxBatch() int {
	switch {
	case o.MaxBatch == 0:
		return DefaultMaxBatch
	case o.MaxBatch < minMaxBatch:
		return minMaxBatch
	}
	return o.MaxBatch
}

// Diff streams the changes that turn the tree (from, fromRoot) into the
// tree (to, toRoot), in strictly ascending key order, restricted to
// opts.Range. The two trees may live in different Sources.
//
// Subtrees whose hashes are equal on both sides are skipped without being
// loaded, so the cost grows with the size of the difference, not of the
// trees: equal roots cost no node loads, and d scattered changes cost
// O(d × height) loads. Nodes are fetched one tree level at a time, in
// batches of at most opts.MaxBatch nodes per Source, so a remote Source
// answers a small diff in one round trip per level. Out-of-line values are
// compared by reference; their blobs are never fetched.
//
// Every loaded node is checked against the hash it was asked for and
// against what its parent says of it (level, key bounds, record count); a
// mismatch ends the iteration with an error wrapping node.ErrCorrupt that
// names the node. A Source error ends it with that error, wrapped. After
// an error (or ctx's cancellation), which is yielded with a zero Change,
// nothing more is yielded. The sequence may be iterated more than once;
// each iteration redoes the diff.
func Diff(ctx context.Context, from node.Source, fromRoot node.Hash, to node.Source, toRoot node.Hash, opts Options) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		d := &differ{ctx: ctx, src: [2]node.Source{from, to}, stats: opts.Stats, max: opts.maxBatch(), trust: opts.TrustHashes}
		if d.stats == nil {
			d.stats = new(Stats)
		}
		err := d.run(fromRoot, toRoot, opts.Range, yield)
		if err != nil && !errors.Is(err, errStop) {
			yield(Change{}, err)
		}
	}
}

// errStop reports that the consumer stopped the iteration.
var errStop = errors.New("diff: stopped")

var sideName = [2]string{"from", "to"}

// sub is one subtree on one side: a node hash and the key interval
// (lo, hi] its parent assigns it, hi being its greatest key. A nil lo is
// unbounded below. A root has a nil lo and, once loaded, its last key as hi.
type sub struct {
	h      node.Hash
	lo, hi []byte
	count  uint64     // record count the parent records; 0 for a root
	level  int        // the level the parent requires; -1 for a root
	n      *node.Node // the loaded node, or nil
}

// side is one side of a segment: consecutive subtrees, all at one level,
// whose key intervals are contiguous.
type side struct {
	subs  []sub
	level int
}

// lvl returns the side's level, or -1 if it is empty.
func (s *side) lvl() int {
	if len(s.subs) == 0 {
		return -1
	}
	return s.level
}

func (s *side) allLoaded() bool {
	for i := range s.subs {
		if s.subs[i].n == nil {
			return false
		}
	}
	return true
}

// segment is a unit of pending work: the records of each side's subtrees
// that fall in [start, end) are to be compared. Segments on the work stack
// are disjoint and ordered: every record of a segment precedes every record
// of the segments below it.
type segment struct {
	start, end []byte // nil: unbounded
	s          [2]side
}

// acting reports which sides the next step works on: the taller side, or
// both when their levels are equal, except a side of loaded leaves, which
// has nothing left to do. A segment with no acting side is ready to emit.
func (g *segment) acting() (act [2]bool) {
	l0, l1 := g.s[0].lvl(), g.s[1].lvl()
	switch {
	case l0 > l1:
		act[0] = true
	case l1 > l0:
		act[1] = true
	default:
		act[0], act[1] = true, true
	}
	for i := range act {
		if act[i] && g.s[i].lvl() <= 0 && (g.s[i].lvl() < 0 || g.s[i].allLoaded()) {
			act[i] = false
		}
	}
	return act
}

func (g *segment) ready() bool {
	a := g.acting()
	return !a[0] && !a[1]
}

// need returns how many nodes the next step on g loads from each side.
func (g *segment) need() (n [2]int) {
	act := g.acting()
	for i := range act {
		if !act[i] {
			continue
		}
		for j := range g.s[i].subs {
			if g.s[i].subs[j].n == nil {
				n[i]++
			}
		}
	}
	return n
}

type differ struct {
	ctx   context.Context
	src   [2]node.Source
	stats *Stats
	max   int
	trust bool   // skip the hash check of loaded nodes
	last  []byte // the last key yielded, to check the order
	any   bool   // whether a key was yielded
}

func (d *differ) run(root0, root1 node.Hash, r tree.Range, yield func(Change, error) bool) error {
	if root0 == root1 {
		return nil
	}
	if r.End != nil && (len(r.End) == 0 || r.Start != nil && bytes.Compare(r.Start, r.End) >= 0) {
		return nil // an empty range
	}
	if err := d.ctx.Err(); err != nil {
		return err
	}
	if root0.Alg() != root1.Alg() {
		return fmt.Errorf("diff %s and %s: roots of different hashes (%s, %s)", root0.Short(), root1.Short(), root0.Alg(), root1.Alg())
	}
	g := &segment{start: r.Start, end: r.End}
	var reqs [2][]*sub
	roots := [2]node.Hash{root0, root1}
	for i, h := range roots {
		if h == node.EmptyRoot(h.Alg()) {
			continue // an empty side: nothing to load
		}
		g.s[i].subs = []sub{{h: h, level: -1}}
		reqs[i] = []*sub{&g.s[i].subs[0]}
	}
	if err := d.load(reqs); err != nil {
		return err
	}
	for i := range g.s {
		if len(g.s[i].subs) > 0 {
			root := &g.s[i].subs[0]
			g.s[i].level = root.n.Level()
			// A root's last key bounds it like a parent's entry would, so
			// that it can match an equal subtree of a taller tree.
			root.hi = root.n.LastKey()
		}
	}
	stack := []*segment{g} // the top is the segment with the least keys
	var win, out []*segment
	for len(stack) > 0 {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		if top := stack[len(stack)-1]; top.ready() {
			stack = stack[:len(stack)-1]
			if err := d.emit(top, yield); err != nil {
				return err
			}
			continue
		}
		// Take a window of segments from the top whose loads fit in one
		// batch per side, splitting a segment too large for a batch alone.
		win = win[:0]
		var loads [2]int
		for len(stack) > 0 {
			g := stack[len(stack)-1]
			n := g.need()
			if len(win) > 0 && (loads[0]+n[0] > d.max || loads[1]+n[1] > d.max) {
				break
			}
			if n[0] > d.max || n[1] > d.max {
				stack = stack[:len(stack)-1]
				a, b := split(g, n)
				if b != nil {
					stack = append(stack, b)
				}
				if a != nil {
					stack = append(stack, a)
				}
				continue
			}
			stack = stack[:len(stack)-1]
			win = append(win, g)
			loads[0] += n[0]
			loads[1] += n[1]
		}
		reqs = [2][]*sub{}
		for _, g := range win {
			act := g.acting()
			for i := range act {
				if !act[i] {
					continue
				}
				for j := range g.s[i].subs {
					p := &g.s[i].subs[j]
					// A subtree straddling a split is shared by adjacent
					// segments: ask for it once.
					if p.n == nil && (len(reqs[i]) == 0 || reqs[i][len(reqs[i])-1] != p) {
						reqs[i] = append(reqs[i], p)
					}
				}
			}
		}
		if err := d.load(reqs); err != nil {
			return err
		}
		out = out[:0]
		for _, g := range win {
			out = expand(g, out)
		}
		for i := len(out) - 1; i >= 0; i-- {
			stack = append(stack, out[i])
		}
		clear(out)
		clear(win)
	}
	return nil
}

// load fetches the requested subs' nodes, one Nodes call per side (the
// two sides concurrently), and checks each node against its sub.
func (d *differ) load(reqs [2][]*sub) error {
	var (
		nodes [2][]*node.Node
		errs  [2]error
		wg    sync.WaitGroup
	)
	fetch := func(i int) {
		hs := make([]node.Hash, len(reqs[i]))
		for j, r := range reqs[i] {
			hs[j] = r.h
		}
		nodes[i], errs[i] = d.src[i].Nodes(d.ctx, hs)
	}
	if len(reqs[0]) > 0 && len(reqs[1]) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); fetch(1) }()
		fetch(0)
		wg.Wait()
	} else {
		for i := range reqs {
			if len(reqs[i]) > 0 {
				fetch(i)
			}
		}
	}
	for i := range reqs {
		if len(reqs[i]) == 0 {
			continue
		}
		d.stats.Batches++
		d.stats.NodesLoaded += len(reqs[i])
		if errs[i] != nil {
			return fmt.Errorf("diff: load %d nodes from the %s side (first %s): %w", len(reqs[i]), sideName[i], reqs[i][0].h, errs[i])
		}
		if len(nodes[i]) != len(reqs[i]) {
			return fmt.Errorf("diff: %s side: %w: asked for %d nodes, got %d", sideName[i], node.ErrCorrupt, len(reqs[i]), len(nodes[i]))
		}
		for j, r := range reqs[i] {
			if err := check(nodes[i][j], r, d.trust); err != nil {
				return fmt.Errorf("diff: %s side: %w", sideName[i], err)
			}
			r.n = nodes[i][j]
		}
	}
	return nil
}

// check validates n, fetched for r; trust skips the hash check.
func check(n *node.Node, r *sub, trust bool) error {
	if n == nil {
		return fmt.Errorf("node %s: %w: the source returned no node", r.h, node.ErrCorrupt)
	}
	if !trust {
		if h := n.Hash(); h != r.h {
			return fmt.Errorf("node %s: %w: its bytes hash to %s", r.h, node.ErrCorrupt, h)
		}
	}
	if r.level < 0 {
		return nil // a root: any level, any keys
	}
	if n.Level() != r.level {
		return fmt.Errorf("node %s: %w: level %d where its parent needs %d", r.h, node.ErrCorrupt, n.Level(), r.level)
	}
	if n.Len() == 0 {
		return fmt.Errorf("node %s: %w: an empty node below a root", r.h, node.ErrCorrupt)
	}
	if r.lo != nil && bytes.Compare(n.Key(0), r.lo) <= 0 {
		return fmt.Errorf("node %s: %w: first key %q is not above %q, its left neighbour's bound", r.h, node.ErrCorrupt, n.Key(0), r.lo)
	}
	if r.hi != nil && !bytes.Equal(n.LastKey(), r.hi) {
		return fmt.Errorf("node %s: %w: last key %q where its parent says %q", r.h, node.ErrCorrupt, n.LastKey(), r.hi)
	}
	if r.count != 0 && n.Count() != r.count {
		return fmt.Errorf("node %s: %w: %d records where its parent says %d", r.h, node.ErrCorrupt, n.Count(), r.count)
	}
	return nil
}
