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
			if got := c.held(); got > c.budget+cost {
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

// TestNodeCacheKeepsBranches: a scan of leaves five times the budget
// leaves the branches cached (they hold less than their share, and are not
// yet stale), and the cache stays within its budget.
func TestNodeCacheKeepsBranches(t *testing.T) {
	mk := func(level, i int) (node.Hash, cached) {
		p := node.InlineValue(make([]byte, 900)).AppendPayload(nil)
		if level > 0 {
			p = node.AppendChildPayload(nil, node.XXH3.Sum([]byte{byte(i)}), 1)
		}
		n := node.Build(node.XXH3, level, []node.Entry{{Key: []byte(fmt.Sprintf("k%06d", i)), Payload: p}})
		return n.Hash(), cached{n: n}
	}
	_, leaf := mk(0, 0)
	c := newNodeCache(400 * nodeCost(leaf))
	var branches []node.Hash
	for i := range 100 {
		h, e := mk(1, i)
		c.add(h, e)
		branches = append(branches, h)
	}
	for i := range 2000 {
		h, e := mk(0, i)
		c.add(h, e)
		if got := c.held(); got > c.budget+nodeCost(e) {
			t.Fatalf("cache holds %d bytes, budget %d", got, c.budget)
		}
	}
	for _, h := range branches {
		if !c.has(h) {
			t.Fatalf("branch %s dropped by a scan of leaves", h.Short())
		}
	}
	// The leaves kept are the most recent ones.
	if h, _ := mk(0, 1999); !c.has(h) {
		t.Fatal("the last leaf added was dropped")
	}
}

// TestNodeCacheRows: rows are found by leaf and key, record absence too,
// survive a scan of leaves, and are dropped (least recently used first)
// once they pass their share of the budget.
func TestNodeCacheRows(t *testing.T) {
	leaf := func(i int) (node.Hash, cached) {
		n := node.Build(node.XXH3, 0, []node.Entry{{Key: []byte(fmt.Sprintf("k%06d", i)), Payload: node.InlineValue(make([]byte, 900)).AppendPayload(nil)}})
		return n.Hash(), cached{n: n}
	}
	h0, e0 := leaf(0)
	c := newNodeCache(200 * nodeCost(e0))
	gen := c.generation()
	val := []byte("value")
	c.addRowIfGen(h0, []byte("a"), node.InlineValue(val), true, gen)
	c.addRowIfGen(h0, []byte("b"), node.Value{}, false, gen)
	val[0] = 'X' // the cache copied it
	if v, found, ok := c.row(h0, []byte("a")); !ok || !found || string(v.Inline) != "value" {
		t.Fatalf("row a: %q found %v cached %v", v.Inline, found, ok)
	}
	if _, found, ok := c.row(h0, []byte("b")); !ok || found {
		t.Fatalf("row b: found %v cached %v, want cached absent", found, ok)
	}
	if _, _, ok := c.row(h0, []byte("c")); ok {
		t.Fatal("row c cached")
	}
	h1, _ := leaf(1)
	if _, _, ok := c.row(h1, []byte("a")); ok {
		t.Fatal("row a of another leaf cached")
	}
	for i := range 1000 { // a scan of leaves: rows stay
		h, e := leaf(2 + i)
		c.add(h, e)
	}
	if _, _, ok := c.row(h0, []byte("a")); !ok {
		t.Fatal("row dropped by a scan of leaves")
	}
	// Rows past their share go, oldest first; the budget holds.
	for i := range 100_000 {
		c.addRowIfGen(h1, []byte(fmt.Sprintf("r%06d", i)), node.InlineValue(val), true, gen)
		if got := c.held(); got > c.budget+rowCost([]byte("r000000"), node.InlineValue(val)) {
			t.Fatalf("cache holds %d bytes, budget %d", got, c.budget)
		}
	}
	if c.bytes[classRow] > c.budget/rowShareDiv {
		t.Fatalf("rows hold %d bytes, share %d", c.bytes[classRow], c.budget/rowShareDiv)
	}
	if _, _, ok := c.row(h1, []byte("r099999")); !ok {
		t.Fatal("the last row added was dropped")
	}
	if _, _, ok := c.row(h1, []byte("r000000")); ok {
		t.Fatal("the first row added was kept")
	}
	c.invalidate()
	c.addRowIfGen(h0, []byte("a"), node.InlineValue(val), true, gen) // a stale generation
	if _, _, ok := c.row(h0, []byte("a")); ok {
		t.Fatal("row added under a stale generation")
	}
}

// TestNodeCacheDropsStaleBranches: branches nobody uses any more (those of
// replaced roots) do not keep their share for good: under a stream of
// leaves they go, while a branch in use stays.
func TestNodeCacheDropsStaleBranches(t *testing.T) {
	mk := func(level, i int) (node.Hash, cached) {
		p := node.InlineValue(make([]byte, 900)).AppendPayload(nil)
		if level > 0 {
			p = node.AppendChildPayload(nil, node.XXH3.Sum([]byte{byte(i)}), 1)
		}
		n := node.Build(node.XXH3, level, []node.Entry{{Key: []byte(fmt.Sprintf("k%06d", i)), Payload: p}})
		return n.Hash(), cached{n: n}
	}
	_, leaf := mk(0, 0)
	c := newNodeCache(400 * nodeCost(leaf))
	var stale []node.Hash
	for i := range 100 {
		h, e := mk(1, i)
		c.add(h, e)
		stale = append(stale, h)
	}
	live, e := mk(1, 1000)
	c.add(live, e)
	for i := range 20_000 {
		h, e := mk(0, i)
		c.add(h, e)
		c.get(live)
	}
	if !c.has(live) {
		t.Fatal("the branch in use was dropped")
	}
	for _, h := range stale {
		if c.has(h) {
			t.Fatalf("stale branch %s still cached", h.Short())
		}
	}
}
