package tree

import (
	"sync"

	"github.com/arbor-sync/arbor/node"
)

// nodeCache keeps decoded nodes, and the records point reads found, within
// one byte budget, in three least-recently-used lists: leaves, branches and
// rows. A row is one key's stored value (or its absence) in one leaf,
// addressed by the leaf's hash and the key, so it is never out of date.
//
// Over budget, the cache drops the least recently used row if rows hold
// more than an eighth of the budget, else the least recently used branch
// if branches hold more than half, else the least recently used leaf (then
// row, then branch), except that a branch or row left unused for long
// (stale) goes before that leaf. So branches, a small fraction of a tree's
// nodes that every read passes through, stay cached while leaves come and go, and a
// point read costs at most one node read from Pebble; and the keys point
// reads ask for again stay cached even when the leaves they lie in do not
// fit (a random key lies in a leaf of ~7 KiB on average at 100-byte
// values, since larger leaves hold more keys, while its row takes some
// 200 bytes). Within each list, recency decides: a working set smaller
// than its share, once read, stays whole however it is read, and one scan
// of more than the budget replaces the cache's contents only with its own
// most recent entries.
//
// Memory stays within the budget (plus one entry) as the costs count it.
type nodeCache struct {
	mu     sync.Mutex
	budget int64
	m      map[node.Hash]*cacheEntry
	rows   map[rowKey]*cacheEntry
	// lists[classLeaf] holds leaves, lists[classBranch] branches and
	// lists[classRow] rows; bytes counts each.
	lists [3]cacheList
	bytes [3]int64
	// gen counts invalidations. A reader notes it before reading a node
	// from Pebble and adds the node only if it has not changed since, so a
	// node read just before garbage collection deleted it cannot enter the
	// cache after the collection cleared it.
	gen uint64
	// clock counts uses (lookups that hit, and adds); an entry records
	// the count at its last use.
	clock uint64
}

// Branches holding more than budget/branchShareDiv are dropped before
// leaves (a tree of 10^8 records of ~100 bytes has about 150 MiB of
// branches), and so are rows holding more than budget/rowShareDiv.
const (
	branchShareDiv = 2
	rowShareDiv    = 8
)

// Entry classes, each with its own list.
const (
	classLeaf = iota
	classBranch
	classRow
)

// rowKey addresses a row: a key in the leaf with hash leaf.
type rowKey struct {
	leaf node.Hash
	key  string
}

// cached is a decoded node and, if it is stored as a delta, the stored
// delta (which Apply composes with its edits to write the next version as
// a delta of the same base without reading the base).
type cached struct {
	n     *node.Node
	delta []byte
}

// cacheEntry is a cached node or row in its list. The list is circular through a
// sentinel: the sentinel's next is the most recently used entry.
type cacheEntry struct {
	h          node.Hash
	e          cached // a node (classLeaf, classBranch)
	row        rowKey // a row (classRow): its value, or its absence
	v          node.Value
	found      bool
	cost       int64
	used       uint64 // nodeCache.clock at the last use
	class      uint8
	prev, next *cacheEntry
}

type cacheList struct{ root cacheEntry }

func (l *cacheList) init() { l.root.prev, l.root.next = &l.root, &l.root }

func (l *cacheList) pushFront(x *cacheEntry) {
	x.prev, x.next = &l.root, l.root.next
	x.prev.next, x.next.prev = x, x
}

func unlink(x *cacheEntry) {
	x.prev.next, x.next.prev = x.next, x.prev
	x.prev, x.next = nil, nil
}

// back returns the least recently used entry, or nil.
func (l *cacheList) back() *cacheEntry {
	if l.root.prev == &l.root {
		return nil
	}
	return l.root.prev
}

func newNodeCache(budget int64) *nodeCache {
	c := &nodeCache{budget: budget}
	c.reset()
	return c
}

func (c *nodeCache) reset() {
	c.m = map[node.Hash]*cacheEntry{}
	c.rows = map[rowKey]*cacheEntry{}
	for i := range c.lists {
		c.lists[i].init()
	}
	c.bytes = [3]int64{}
}

// nodeCost estimates a decoded node's memory: its bytes, its span table and
// the map and list entry.
func nodeCost(e cached) int64 { return int64(len(e.n.Raw()) + 16*e.n.Len() + len(e.delta) + 128) }

// rowCost estimates a row's memory: its key and value and the map and
// list entry.
func rowCost(key []byte, v node.Value) int64 { return int64(2*len(key) + len(v.Inline) + 192) }

func classOf(n *node.Node) uint8 {
	if n.IsLeaf() {
		return classLeaf
	}
	return classBranch
}

func (c *nodeCache) get(h node.Hash) *node.Node { return c.entry(h).n }

// entry returns h's cache entry, or a zero one, and marks it used.
func (c *nodeCache) entry(h node.Hash) cached {
	if c.budget <= 0 {
		return cached{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	x, ok := c.m[h]
	if !ok {
		return cached{}
	}
	c.touch(x)
	return x.e
}

// touch marks x used.
func (c *nodeCache) touch(x *cacheEntry) {
	c.clock++
	x.used = c.clock
	if l := &c.lists[x.class]; l.root.next != x {
		unlink(x)
		l.pushFront(x)
	}
}

// row returns key's cached stored value in the leaf with hash leaf:
// ok if the row is cached, found if the leaf holds the key.
func (c *nodeCache) row(leaf node.Hash, key []byte) (v node.Value, found, ok bool) {
	if c.budget <= 0 {
		return node.Value{}, false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	x, ok := c.rows[rowKey{leaf, string(key)}]
	if !ok {
		return node.Value{}, false, false
	}
	c.touch(x)
	return x.v, x.found, true
}

// seen reports whether a point read marked leaf h (markSeenIfGen) and the
// mark is still cached, and marks it used.
func (c *nodeCache) seen(h node.Hash) bool {
	_, _, ok := c.row(h, nil)
	return ok
}

// markSeenIfGen marks leaf h as read by a point read: a row with an empty
// key, which no record has.
func (c *nodeCache) markSeenIfGen(h node.Hash, gen uint64) {
	c.addRowIfGen(h, nil, node.Value{}, false, gen)
}

// addRowIfGen caches key's stored value v (or its absence, if !found) in
// the leaf with hash leaf, copying key and an inline value, unless the
// cache was invalidated since generation gen.
func (c *nodeCache) addRowIfGen(leaf node.Hash, key []byte, v node.Value, found bool, gen uint64) {
	if c.budget <= 0 {
		return
	}
	if v.Inline != nil {
		v.Inline = append(make([]byte, 0, len(v.Inline)), v.Inline...)
	}
	k := rowKey{leaf, string(key)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if x, ok := c.rows[k]; ok {
		c.touch(x)
		return
	}
	x := &cacheEntry{row: k, v: v, found: found, cost: rowCost(key, v), class: classRow}
	c.rows[k] = x
	c.insertLocked(x)
}

// has reports whether h is cached, without marking it used.
func (c *nodeCache) has(h node.Hash) bool {
	if c.budget <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[h]
	return ok
}

func (c *nodeCache) add(h node.Hash, e cached) {
	if c.budget <= 0 {
		return
	}
	c.mu.Lock()
	c.addLocked(h, e)
	c.mu.Unlock()
}

// generation returns the current invalidation count, for addIfGen.
func (c *nodeCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// addIfGen adds n unless the cache was invalidated since generation gen.
func (c *nodeCache) addIfGen(h node.Hash, e cached, gen uint64) {
	if c.budget <= 0 {
		return
	}
	c.mu.Lock()
	if c.gen == gen {
		c.addLocked(h, e)
	}
	c.mu.Unlock()
}

// invalidate empties the cache and starts a new generation.
func (c *nodeCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.reset()
	c.mu.Unlock()
}

func (c *nodeCache) addLocked(h node.Hash, e cached) {
	if x, ok := c.m[h]; ok {
		// Already cached (the same node: it is content addressed). Keep
		// the entry, but mark it used.
		c.touch(x)
		return
	}
	x := &cacheEntry{h: h, e: e, cost: nodeCost(e), class: classOf(e.n)}
	c.m[h] = x
	c.insertLocked(x)
}

// evictionOrder lists, for each case, the classes to drop from, in order:
// rows over their share first, then branches over theirs, else leaves.
var evictionOrder = [3][3]uint8{
	{classRow, classLeaf, classBranch},
	{classBranch, classLeaf, classRow},
	{classLeaf, classRow, classBranch},
}

// insertLocked adds x, already in its map, to its list, and drops least
// recently used entries until the cache fits its budget again (or only x
// is left).
func (c *nodeCache) insertLocked(x *cacheEntry) {
	c.clock++
	x.used = c.clock
	c.lists[x.class].pushFront(x)
	c.bytes[x.class] += x.cost
	for c.total() > c.budget {
		v := c.stale(x)
		if v == nil {
			order := &evictionOrder[2]
			if c.bytes[classRow] > c.budget/rowShareDiv {
				order = &evictionOrder[0]
			} else if c.bytes[classBranch] > c.budget/branchShareDiv {
				order = &evictionOrder[1]
			}
			for _, class := range order {
				if v = c.lists[class].back(); v != nil && v != x {
					break
				}
			}
		}
		if v == nil || v == x {
			break
		}
		c.dropLocked(v)
	}
}

// staleUses is how many uses per cached entry make a branch or a row
// stale: one unused for staleUses × (entries cached) uses while leaves
// were used is dropped before the least recently used leaf, although its
// class is within its share. Branches of replaced roots and rows of
// replaced leaves are never used again; without this they would hold
// their shares for good.
const staleUses = 8

// stale returns the least recently used branch or row, other than x, if
// it is stale against the least recently used leaf, or nil.
func (c *nodeCache) stale(x *cacheEntry) *cacheEntry {
	leaf := c.lists[classLeaf].back()
	if leaf == nil {
		return nil
	}
	window := staleUses * uint64(len(c.m)+len(c.rows))
	for _, class := range [...]uint8{classBranch, classRow} {
		if v := c.lists[class].back(); v != nil && v != x && v.used+window < leaf.used {
			return v
		}
	}
	return nil
}

func (c *nodeCache) total() int64 { return c.bytes[0] + c.bytes[1] + c.bytes[2] }

func (c *nodeCache) dropLocked(x *cacheEntry) {
	unlink(x)
	if x.class == classRow {
		delete(c.rows, x.row)
	} else {
		delete(c.m, x.h)
	}
	c.bytes[x.class] -= x.cost
}

func (c *nodeCache) remove(h node.Hash) {
	if c.budget <= 0 {
		return
	}
	c.mu.Lock()
	if x, ok := c.m[h]; ok {
		c.dropLocked(x)
	}
	c.mu.Unlock()
}

// held returns the bytes the cache holds, as nodeCost counts them.
func (c *nodeCache) held() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total()
}
