package tree

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

// TestNodeCacheKeepsWorkingSet checks the cache's two promises: memory stays
// within the budget (plus one node), and a working set smaller than the
// budget, once read, is served from the cache entirely however it is read.
func TestNodeCacheKeepsWorkingSet(t *testing.T) {
	mk := func(i int) (node.Hash, cached) {
		n := node.Build(node.XXH3, 0, []node.Entry{{Key: []byte(fmt.Sprintf("k%06d", i)), Payload: node.InlineValue(make([]byte, 900)).AppendPayload(nil)}})
		return n.Hash(), cached{n: n}
	}
	_, one := mk(0)
	cost := nodeCost(one)
	for _, ws := range []int{100, 400, 700} {
		c := newNodeCache(800 * cost)
		r := rand.New(rand.NewPCG(uint64(ws), 1))
		check := func() {
			if got := c.youngBytes + c.oldBytes; got > c.budget+cost {
				t.Fatalf("working set %d: cache holds %d bytes, budget %d", ws, got, c.budget)
			}
		}
		// Scan far more than the budget first, then settle on the set.
		for i := 0; i < 3000; i++ {
			h, e := mk(1_000_000 + i)
			c.add(h, e)
			check()
		}
		for round := 0; round < 3; round++ {
			for _, i := range r.Perm(ws) {
				h, e := mk(i)
				if c.get(h) == nil {
					c.add(h, e)
				}
				check()
			}
		}
		misses := 0
		for _, i := range r.Perm(ws) {
			h, _ := mk(i)
			if c.get(h) == nil {
				misses++
			}
			check()
		}
		if misses > 0 {
			t.Errorf("working set %d of a budget of 800 nodes: %d misses after warming", ws, misses)
		}
	}
}

// TestNodeCacheSurvivesAFlip: after the cache fills past its budget, the
// nodes added just before stay cached (an earlier version dropped nearly
// everything on the next add after a flip).
func TestNodeCacheSurvivesAFlip(t *testing.T) {
	mk := func(i int) (node.Hash, cached) {
		n := node.Build(node.XXH3, 0, []node.Entry{{Key: []byte(fmt.Sprintf("k%06d", i)), Payload: node.InlineValue(make([]byte, 900)).AppendPayload(nil)}})
		return n.Hash(), cached{n: n}
	}
	_, one := mk(0)
	c := newNodeCache(800 * nodeCost(one))
	for i := 0; i < 801; i++ { // one past the budget: a flip
		h, e := mk(i)
		c.add(h, e)
	}
	h, _ := mk(800)
	c.get(h) // a hit right after the flip
	misses := 0
	for i := 1; i <= 800; i++ {
		if h, _ := mk(i); c.get(h) == nil {
			misses++
		}
	}
	if misses > 1 {
		t.Fatalf("%d of the last 800 nodes added were dropped (budget: 800)", misses)
	}
}
