package tree

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
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
	// part, if set, makes the mutator a worker of a parallel level: it
	// collects its new nodes there instead of writing them to the batch.
	part *levelPart
}

func (m *mutator) load(h node.Hash) (*node.Node, error) {
	if m.part != nil {
		return m.b.nodeShared(m.ctx, h)
	}
	return m.b.node(m.ctx, h)
}

// emit stores (or, in a worker, collects) a new node that replaces near.
func (m *mutator) emit(n *node.Node, near node.Hash) (node.Hash, error) {
	if m.part != nil {
		return m.part.collect(m.ctx, m.b, n, near), nil
	}
	return m.b.putBuilt(m.ctx, n, near)
}

// replace records that old was rewritten.
func (m *mutator) replace(old node.Hash) {
	if m.part != nil {
		m.part.replaced = append(m.part.replaced, old)
		return
	}
	m.b.replaced = append(m.b.replaced, old)
}

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
		var dels, puts []node.Entry
		if level == 0 && m.part == nil && len(edits) >= parallelMinEdits && !m.b.ingest && runtime.GOMAXPROCS(0) > 1 {
			dels, puts, err = m.applyLevelParallel(root, rootNode, edits)
		} else {
			dels, puts, err = m.applyLevel(root, rootNode, level, edits)
		}
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

func entryCount(alg node.Alg, level int, e node.Entry) uint64 {
	if level == 0 {
		return 1
	}
	_, c, _ := node.DecodeChildPayload(alg, e.Payload)
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
		h, err := m.emit(node.Build(m.b.s.alg, level, pend), near)
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
			count += entryCount(m.b.s.alg, level, e)
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
				m.replace(c.hash())
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
		return m.b.s.EmptyRoot(), nil
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
			count += entryCount(m.b.s.alg, level, e)
			if sp.Next(e) || k == len(entries)-1 {
				h, err := m.b.putBuilt(m.ctx, node.Build(m.b.s.alg, level, pend), node.Hash{})
				if err != nil {
					return node.Hash{}, err
				}
				next = append(next, node.Entry{Key: e.Key, Payload: node.AppendChildPayload(nil, h, count)})
				pend, count = nil, 0
			}
		}
		entries = next
	}
	h, _, err := node.DecodeChildPayload(m.b.s.alg, entries[0].Payload)
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

// parallelMinEdits is the number of edits from which Apply rewrites the
// leaf level with two goroutines. Rebuilding, hashing and delta-encoding
// leaves is most of an update batch's CPU. At 512 (was 2048), batches of
// 1000 random updates to 100k records run 20–30% faster (the bench
// harness's store section: 91–100k against 71–82k records/s). A variable
// so that tests can exercise the parallel path with small trees.
var parallelMinEdits = 512

// parallelFallbacks counts parallel levels redone on one goroutine because
// the halves' runs met (for tests).
var parallelFallbacks atomic.Int64

// partBatches keeps the Pebble batches of parallel levels for reuse. A
// level of scattered edits writes megabytes of nodes to each; a new batch
// takes that memory fresh from the runtime, and touching it for the first
// time cost a catch-up of 33 000 edits to 10^5 records about a tenth of
// its time. The pool lets the garbage collector drop them, and a batch
// keeps at most spillBytes+spillBytes/8 when it is reset.
var partBatches sync.Pool // of *partBatch

type partBatch struct {
	db *pebble.DB
	pb *pebble.Batch
}

// getPartBatch returns an empty batch of db, reused if one is pooled.
func getPartBatch(db *pebble.DB, size int) *pebble.Batch {
	if v, _ := partBatches.Get().(*partBatch); v != nil {
		if v.db == db {
			return v.pb
		}
		v.pb.Close() // another store's
	}
	return db.NewBatchWithSize(size, pebble.WithMaxRetainedSizeBytes(spillBytes+spillBytes/8))
}

// putPartBatch resets pb, committed or abandoned, and pools it.
func putPartBatch(db *pebble.DB, pb *pebble.Batch) {
	pb.Reset()
	partBatches.Put(&partBatch{db: db, pb: pb})
}

// levelPart is one worker's share of a parallel level: its own Pebble
// batch of the nodes it built, the nodes themselves (for the batch's
// pending set and the cache), and the old nodes it replaced.
type levelPart struct {
	pb       *pebble.Batch
	nodes    []builtNode
	seen     map[node.Hash]int // index in nodes
	replaced []node.Hash
	scratch  deltaScratch
	// With address checks: the addresses it claimed, and its writes not
	// yet probed for (probed before pb is committed).
	claims     claimSet
	unverified []written
	err        error
}

type builtNode struct {
	h     node.Hash
	n     *node.Node
	delta []byte
}

// collect hashes n, delta-encodes it and writes it to the worker's own
// Pebble batch, reading the Batch but never changing it. With address
// checks it claims n's address in p.claims (see Batch.put) and records
// the write for probing.
func (p *levelPart) collect(ctx context.Context, b *Batch, n *node.Node, near node.Hash) node.Hash {
	h := n.Hash()
	if h == b.s.EmptyRoot() || p.err != nil {
		return h
	}
	check := b.checked()
	if i, ok := p.seen[h]; ok {
		if check {
			p.err = b.pendingConflict(h, p.nodes[i].n.Raw(), n.Raw())
		}
		return h
	}
	if pn, ok := b.pending[h]; ok {
		if check {
			p.err = b.pendingConflict(h, pn.raw, n.Raw())
		}
		return h
	}
	if check {
		if write, err := b.claimNode(h, n.Raw(), p.claims); err != nil || !write {
			p.err = err
			return h
		}
		p.unverified = append(p.unverified, written{makeClaimKey(kindNode, h), n.Raw()})
	} else if b.s.cache.has(h) {
		return h
	}
	p.seen[h] = len(p.nodes)
	var d []byte
	if !near.IsZero() && near != b.s.EmptyRoot() {
		d = b.deltaFrom(&p.scratch, h, n, near)
	}
	key, stored := nodeKey(h), n.Raw()
	if d != nil {
		key, stored = deltaKey(h), d
	}
	p.err = p.pb.Set(key, stored, nil)
	p.nodes = append(p.nodes, builtNode{h: h, n: n, delta: d})
	return h
}

// applyLevelParallel is applyLevel at the leaf level with the edits split
// in two at a leaf boundary, each half rewritten by its own goroutine; the
// batch then takes both halves' nodes in key order. If the halves' runs
// met (a run that lost its boundaries spilled into the other half's
// leaves) it falls back to one goroutine.
func (m *mutator) applyLevelParallel(rootHash node.Hash, root *node.Node, edits []levelEdit) (dels, puts []node.Entry, err error) {
	// Split after the leaf holding the middle edit, so that the halves
	// start in different leaves.
	mid := len(edits) / 2
	c, err := seek(m.load, rootHash, root, 0, edits[mid-1].key)
	if err != nil {
		return nil, nil, err
	}
	if !c.isLast() {
		last := c.node().LastKey()
		for mid < len(edits) && bytes.Compare(edits[mid].key, last) <= 0 {
			mid++
		}
	} else {
		mid = len(edits)
	}
	if mid == len(edits) {
		return m.applyLevel(rootHash, root, 0, edits)
	}
	// Workers write their nodes to Pebble themselves, ahead of the commit
	// like a spill. A node they write may be a delta of a node this batch
	// wrote earlier: write those first, so that a crash never leaves a
	// stored delta without its base.
	if !m.b.pb.Empty() {
		if err := m.b.verify(m.ctx); err != nil {
			return nil, nil, err
		}
		if err := m.b.pb.Commit(pebble.NoSync); err != nil {
			return nil, nil, fmt.Errorf("store %s: write nodes: %w", m.b.s.dir, err)
		}
		m.b.pb.Close()
		m.b.pb = m.b.s.db.NewBatch()
		m.b.size = 0
		m.b.s.releaseClaims(m.b.claims) // the claimed bytes are in Pebble now
	}
	halves := [2][]levelEdit{edits[:mid], edits[mid:]}
	var (
		parts   [2]levelPart
		outDels [2][]node.Entry
		outPuts [2][]node.Entry
		errs    [2]error
		wg      sync.WaitGroup
	)
	for i := range halves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[i]
			p.pb = getPartBatch(m.b.s.db, min(spillBytes, 1024*len(halves[i])))
			p.seen = map[node.Hash]int{}
			p.claims = claimSet{}
			defer putPartBatch(m.b.s.db, p.pb)
			w := &mutator{ctx: m.ctx, cfg: m.cfg, b: m.b, part: p}
			outDels[i], outPuts[i], errs[i] = w.applyLevel(rootHash, root, 0, halves[i])
			if errs[i] == nil {
				errs[i] = p.err
			}
			if errs[i] == nil {
				errs[i] = m.b.s.verifyWrites(m.ctx, p.unverified, p.claims)
			}
			if errs[i] == nil {
				errs[i] = p.pb.Commit(pebble.NoSync)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			// The halves' nodes are dropped; what a half wrote to Pebble
			// is unreferenced, so its claims can go.
			for i := range parts {
				m.b.s.releaseClaims(parts[i].claims)
			}
			return nil, nil, err
		}
	}
	for i := range parts {
		m.b.takeClaims(parts[i].claims)
	}
	seen := make(map[node.Hash]struct{}, len(parts[0].replaced))
	for _, h := range parts[0].replaced {
		seen[h] = struct{}{}
	}
	for _, h := range parts[1].replaced {
		if _, ok := seen[h]; ok {
			parallelFallbacks.Add(1)
			return m.applyLevel(rootHash, root, 0, edits)
		}
	}
	for i := range parts {
		for _, bn := range parts[i].nodes {
			m.b.adopt(bn)
		}
		m.b.replaced = append(m.b.replaced, parts[i].replaced...)
	}
	return append(outDels[0], outDels[1]...), append(outPuts[0], outPuts[1]...), nil
}
