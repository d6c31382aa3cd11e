package tree

import (
	"sync"

	"github.com/arbor-sync/arbor/node"
)

// nodeCache keeps decoded nodes. It is a two-generation cache: lookups check
// the young map, then the old one (promoting hits into the young one); when
// the two together exceed the budget, entries of the old map (those not
// used since it aged) are dropped until they fit, and once the old map is
// empty the young one ages. This bounds memory to the budget (plus one
// node) with amortised O(1) work and no per-entry list links, and a working
// set smaller than the budget stays whole.
type nodeCache struct {
	mu                   sync.Mutex
	budget               int64
	young, old           map[node.Hash]cached
	youngBytes, oldBytes int64
	// gen counts invalidations. A reader notes it before reading a node
	// from Pebble and adds the node only if it has not changed since, so a
	// node read just before garbage collection deleted it cannot enter the
	// cache after the collection cleared it.
	gen uint64
}

// cached is a decoded node and, if it is stored as a delta, the stored
// delta (which Apply composes with its edits to write the next version as
// a delta of the same base without reading the base).
type cached struct {
	n     *node.Node
	delta []byte
}

func newNodeCache(budget int64) *nodeCache {
	return &nodeCache{budget: budget, young: map[node.Hash]cached{}}
}

// nodeCost estimates a decoded node's memory: its bytes, its span table and
// the map entry.
func nodeCost(e cached) int64 { return int64(len(e.n.Raw()) + 16*e.n.Len() + len(e.delta) + 96) }

func (c *nodeCache) get(h node.Hash) *node.Node { return c.entry(h).n }

// entry returns h's cache entry, or a zero one.
func (c *nodeCache) entry(h node.Hash) cached {
	if c.budget <= 0 {
		return cached{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.young[h]; ok {
		return e
	}
	if e, ok := c.old[h]; ok {
		delete(c.old, h)
		c.oldBytes -= nodeCost(e)
		c.addLocked(h, e)
		return e
	}
	return cached{}
}

// has reports whether h is cached, without promoting it.
func (c *nodeCache) has(h node.Hash) bool {
	if c.budget <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.young[h]
	if !ok {
		_, ok = c.old[h]
	}
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
	c.young, c.old, c.youngBytes, c.oldBytes = map[node.Hash]cached{}, nil, 0, 0
	c.mu.Unlock()
}

func (c *nodeCache) addLocked(h node.Hash, e cached) {
	if _, ok := c.young[h]; ok {
		return
	}
	if old, ok := c.old[h]; ok {
		delete(c.old, h)
		c.oldBytes -= nodeCost(old)
	}
	c.young[h] = e
	c.youngBytes += nodeCost(e)
	// Over budget: drop old entries (any: the old generation is the part
	// not used since it aged) until it fits; once none are left, age the
	// young generation.
	for c.youngBytes+c.oldBytes > c.budget {
		if len(c.old) == 0 {
			c.old, c.oldBytes = c.young, c.youngBytes
			c.young = make(map[node.Hash]cached, len(c.old))
			c.youngBytes = 0
			break
		}
		for oh, oe := range c.old {
			delete(c.old, oh)
			c.oldBytes -= nodeCost(oe)
			if c.youngBytes+c.oldBytes <= c.budget {
				break
			}
		}
	}
}

func (c *nodeCache) remove(h node.Hash) {
	if c.budget <= 0 {
		return
	}
	c.mu.Lock()
	if e, ok := c.young[h]; ok {
		c.youngBytes -= nodeCost(e)
		delete(c.young, h)
	}
	if e, ok := c.old[h]; ok {
		c.oldBytes -= nodeCost(e)
		delete(c.old, h)
	}
	c.mu.Unlock()
}
