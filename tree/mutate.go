package tree

import (
	"bytes"
	"context"
	"fmt"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
)

// levelEdit sets key to payload at one level of a tree; a nil payload
// deletes key. At level 0 the payload is an encoded value, above it an
// encoded child reference.
type levelEdit struct {
	key     []byte
	payload []byte
}

// mutator applies sorted edits to a tree, one level at a time.
//
// At each level it finds the node holding the first pending edit, merges
// that node's entries with the edits that fall in it, and re-chunks the
// result from the node's start (which is a boundary). It keeps consuming
// following nodes until the splitter reaches a boundary exactly where an
// old node ended: from there on the old chunking is reproduced unchanged,
// because a boundary resets all splitter state. Each rewritten run of nodes
// becomes edits one level up: delete the old nodes' entries, put the new
// ones. The root level is rewritten whole, and new levels are added or
// single-child roots collapsed so the shape stays canonical.
type mutator struct {
	ctx context.Context
	cfg chunker.Config
	b   *Batch
}

func (m *mutator) load(h node.Hash) (*node.Node, error) { return m.b.node(m.ctx, h) }

func (m *mutator) apply(root node.Hash, edits []levelEdit) (node.Hash, error) {
	rootNode, err := m.load(root)
	if err != nil {
		return node.Hash{}, err
	}
	top := rootNode.Level()
	for level := 0; ; level++ {
		if len(edits) == 0 {
			return root, nil
		}
		dels, puts, err := m.applyLevel(root, rootNode, level, edits)
		if err != nil {
			return node.Hash{}, err
		}
		if level == top {
			return m.finishTop(level, puts)
		}
		edits = parentEdits(dels, puts)
	}
}

// cursor is a path from the root to one node at a target level.
type cursor struct {
	nodes  []*node.Node
	hashes []node.Hash
	idx    []int // idx[i]: which child of nodes[i] is nodes[i+1]
}

func (c *cursor) node() *node.Node { return c.nodes[len(c.nodes)-1] }
func (c *cursor) hash() node.Hash  { return c.hashes[len(c.hashes)-1] }

// isLast reports whether the cursor's node is the last one at its level.
func (c *cursor) isLast() bool {
	for i := 0; i < len(c.idx); i++ {
		if c.idx[i] != c.nodes[i].Len()-1 {
			return false
		}
	}
	return true
}

// seek returns a cursor at the node of level that key belongs in: the first
// whose last key is ≥ key, or the level's last node.
func seek(load func(node.Hash) (*node.Node, error), rootHash node.Hash, root *node.Node, level int, key []byte) (*cursor, error) {
	c := &cursor{nodes: []*node.Node{root}, hashes: []node.Hash{rootHash}}
	n := root
	for n.Level() > level {
		i := n.Search(key)
		if i == n.Len() {
			i = n.Len() - 1
		}
		if err := c.descend(load, i); err != nil {
			return nil, err
		}
		n = c.node()
	}
	return c, nil
}

// reseek moves c, whose node is at level, to the node of that level that
// key belongs in, for a key greater than every key under c's node. It
// climbs only to the nearest ancestor whose subtree holds key: sorted
// edits usually land under the same parent, so most seeks then take one
// step down instead of a walk from the root.
func (c *cursor) reseek(load func(node.Hash) (*node.Node, error), level int, key []byte) error {
	j := len(c.idx) - 1
	for j > 0 && bytes.Compare(key, c.nodes[j].LastKey()) > 0 {
		j--
	}
	c.nodes, c.hashes, c.idx = c.nodes[:j+1], c.hashes[:j+1], c.idx[:j]
	for n := c.node(); n.Level() > level; n = c.node() {
		i := n.Search(key)
		if i == n.Len() {
			i = n.Len() - 1
		}
		if err := c.descend(load, i); err != nil {
			return err
		}
	}
	return nil
}

func (c *cursor) descend(load func(node.Hash) (*node.Node, error), i int) error {
	parent := c.node()
	h, _ := parent.Child(i)
	child, err := load(h)
	if err != nil {
		return err
	}
	if child.Level() != parent.Level()-1 {
		return fmt.Errorf("node %s: %w (level %d under a level-%d parent)", h, node.ErrCorrupt, child.Level(), parent.Level())
	}
	c.idx = append(c.idx, i)
	c.nodes = append(c.nodes, child)
	c.hashes = append(c.hashes, h)
	return nil
}

// next moves the cursor to the following node at its level. It reports
// false at the end of the level.
func (c *cursor) next(load func(node.Hash) (*node.Node, error)) (bool, error) {
	level := c.node().Level()
	for j := len(c.idx) - 1; j >= 0; j-- {
		if c.idx[j]+1 < c.nodes[j].Len() {
			i := c.idx[j] + 1
			c.nodes, c.hashes, c.idx = c.nodes[:j+1], c.hashes[:j+1], c.idx[:j]
			if err := c.descend(load, i); err != nil {
				return false, err
			}
			for c.node().Level() > level {
				if err := c.descend(load, 0); err != nil {
					return false, err
				}
			}
			return true, nil
		}
	}
	return false, nil
}

func entryCount(level int, e node.Entry) uint64 {
	if level == 0 {
		return 1
	}
	_, c, _ := node.DecodeChildPayload(e.Payload)
	return c
}

// applyLevel rewrites the nodes of one level that edits touch. dels are the
// old nodes' parent entries; puts the new nodes' parent entries, in order.
func (m *mutator) applyLevel(rootHash node.Hash, root *node.Node, level int, edits []levelEdit) (dels, puts []node.Entry, err error) {
	var (
		pend  []node.Entry
		count uint64
		// near is the old node being merged: the new node being filled
		// usually replaces it, so it may be stored as a delta of it.
		near node.Hash
	)
	flush := func() error {
		if len(pend) == 0 {
			return nil
		}
		h, err := m.b.putBuilt(node.Build(level, pend), near)
		if err != nil {
			return err
		}
		puts = append(puts, node.Entry{Key: pend[len(pend)-1].Key, Payload: node.AppendChildPayload(nil, h, count)})
		pend, count = pend[:0], 0
		return nil
	}
	var c *cursor
	for i := 0; i < len(edits); {
		if err := m.ctx.Err(); err != nil {
			return nil, nil, err
		}
		var err error
		if c == nil || level == root.Level() {
			c, err = seek(m.load, rootHash, root, level, edits[i].key)
		} else {
			err = c.reseek(m.load, level, edits[i].key)
		}
		if err != nil {
			return nil, nil, err
		}
		sp := chunker.NewSplitter(m.cfg, level)
		add := func(e node.Entry) error {
			pend = append(pend, e)
			count += entryCount(level, e)
			if sp.Next(e) {
				return flush()
			}
			return nil
		}
		for {
			cur := c.node()
			near = c.hash()
			last := c.isLast()
			if cur.Len() > 0 {
				dels = append(dels, node.Entry{Key: cur.LastKey(), Payload: node.AppendChildPayload(nil, c.hash(), cur.Count())})
				m.b.replaced = append(m.b.replaced, c.hash())
			}
			j := i
			for j < len(edits) && (last || bytes.Compare(edits[j].key, cur.LastKey()) <= 0) {
				j++
			}
			// Merge the node's entries with its edits; an edit replaces an
			// equal key, and a nil payload drops it.
			for a := 0; a < cur.Len() || i < j; {
				var cmp int
				switch {
				case i >= j:
					cmp = -1
				case a >= cur.Len():
					cmp = 1
				default:
					cmp = bytes.Compare(cur.Key(a), edits[i].key)
				}
				if cmp < 0 {
					if err := add(cur.Entry(a)); err != nil {
						return nil, nil, err
					}
					a++
					continue
				}
				if cmp == 0 {
					a++
				}
				if edits[i].payload != nil {
					if err := add(node.Entry{Key: edits[i].key, Payload: edits[i].payload}); err != nil {
						return nil, nil, err
					}
				}
				i++
			}
			if sp.AtBoundary() {
				break // realigned with the old chunking
			}
			if last {
				if err := flush(); err != nil {
					return nil, nil, err
				}
				break
			}
			if _, err := c.next(m.load); err != nil {
				return nil, nil, err
			}
		}
	}
	return dels, puts, nil
}

// parentEdits merges a level's removed and added parent entries (each in
// ascending key order) into edits for the level above, dropping pairs that
// cancel out because a node was rebuilt unchanged.
func parentEdits(dels, puts []node.Entry) []levelEdit {
	out := make([]levelEdit, 0, len(dels)+len(puts))
	i, j := 0, 0
	for i < len(dels) || j < len(puts) {
		switch {
		case j >= len(puts) || (i < len(dels) && bytes.Compare(dels[i].Key, puts[j].Key) < 0):
			out = append(out, levelEdit{key: dels[i].Key})
			i++
		case i >= len(dels) || bytes.Compare(dels[i].Key, puts[j].Key) > 0:
			out = append(out, levelEdit{key: puts[j].Key, payload: puts[j].Payload})
			j++
		default:
			if !bytes.Equal(dels[i].Payload, puts[j].Payload) {
				out = append(out, levelEdit{key: puts[j].Key, payload: puts[j].Payload})
			}
			i++
			j++
		}
	}
	return out
}

// finishTop turns the rewritten top level into a root: it builds new levels
// while a level has more than one node, then collapses single-child roots.
func (m *mutator) finishTop(level int, entries []node.Entry) (node.Hash, error) {
	if len(entries) == 0 {
		return node.EmptyRoot, nil
	}
	for len(entries) > 1 {
		level++
		var (
			next  []node.Entry
			pend  []node.Entry
			count uint64
		)
		sp := chunker.NewSplitter(m.cfg, level)
		for k, e := range entries {
			pend = append(pend, e)
			count += entryCount(level, e)
			if sp.Next(e) || k == len(entries)-1 {
				h, err := m.b.putBuilt(node.Build(level, pend), node.Hash{})
				if err != nil {
					return node.Hash{}, err
				}
				next = append(next, node.Entry{Key: e.Key, Payload: node.AppendChildPayload(nil, h, count)})
				pend, count = nil, 0
			}
		}
		entries = next
	}
	h, _, err := node.DecodeChildPayload(entries[0].Payload)
	if err != nil {
		return node.Hash{}, err
	}
	return m.collapse(h)
}

// collapse descends from h while the node is a branch with one child: a
// canonical root is never such a branch.
func (m *mutator) collapse(h node.Hash) (node.Hash, error) {
	for {
		n, err := m.load(h)
		if err != nil {
			return node.Hash{}, err
		}
		if n.Level() == 0 || n.Len() > 1 {
			return h, nil
		}
		h, _ = n.Child(0)
	}
}
