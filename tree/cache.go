package tree

import (
	"sync"

	"github.com/arbor-sync/arbor/node"
)

// nodeCache keeps decoded nodes. It is a two-generation cache: lookups check
// the young map, then the old one (promoting hits); when the young map
// exceeds half the budget the old map is dropped and the young one ages.
// This bounds memory to about the budget with O(1) work and no per-entry
// list links, and keeps whatever was used in the last generation.
type nodeCache struct {
	mu         sync.Mutex
	budget     int64
	young, old map[node.Hash]*node.Node
	youngBytes int64
}

func newNodeCache(budget int64) *nodeCache {
	return &nodeCache{budget: budget, young: map[node.Hash]*node.Node{}}
}

// nodeCost estimates a decoded node's memory: its bytes, its span table and
// the map entry.
func nodeCost(n *node.Node) int64 { return int64(len(n.Raw()) + 16*n.Len() + 96) }

func (c *nodeCache) get(h node.Hash) *node.Node {
	if c.budget <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.young[h]; ok {
		return n
	}
	if n, ok := c.old[h]; ok {
		delete(c.old, h)
		c.addLocked(h, n)
		return n
	}
	return nil
}

func (c *nodeCache) add(h node.Hash, n *node.Node) {
	if c.budget <= 0 {
		return
	}
	c.mu.Lock()
	c.addLocked(h, n)
	c.mu.Unlock()
}

func (c *nodeCache) addLocked(h node.Hash, n *node.Node) {
	if _, ok := c.young[h]; ok {
		return
	}
	c.young[h] = n
	c.youngBytes += nodeCost(n)
	if c.youngBytes > c.budget/2 {
		c.old = c.young
		c.young = make(map[node.Hash]*node.Node, len(c.old))
		c.youngBytes = 0
	}
}

func (c *nodeCache) remove(h node.Hash) {
	c.mu.Lock()
	delete(c.young, h)
	delete(c.old, h)
	c.mu.Unlock()
}
