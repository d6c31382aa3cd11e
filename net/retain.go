package net

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// retainPrefix names the refs that keep recently published roots alive.
const retainPrefix = "retain/"

// retention tracks the roots the server published recently, so that a
// client presenting one as its base can be answered with a diff. Each is
// kept as a ref "retain/<seq>"; the oldest are dropped beyond the cap.
// Callers serialise changes (Server.wmu); reads may run concurrently.
type retention struct {
	mu    sync.RWMutex
	cap   int
	seq   uint64
	roots []retained // ascending seq
	count map[node.Hash]int
}

type retained struct {
	seq  uint64
	root node.Hash
}

func loadRetention(s *tree.Store, capacity int) (*retention, error) {
	r := &retention{cap: capacity, count: map[node.Hash]int{}}
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	for name, h := range refs {
		rest, ok := strings.CutPrefix(name, retainPrefix)
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store %s: bad retention ref %q", s.Dir(), name)
		}
		r.roots = append(r.roots, retained{seq, h})
		r.count[h]++
		r.seq = max(r.seq, seq)
	}
	sort.Slice(r.roots, func(i, j int) bool { return r.roots[i].seq < r.roots[j].seq })
	return r, nil
}

func retainRef(seq uint64) string { return fmt.Sprintf("%s%020d", retainPrefix, seq) }

// has reports whether root is retained.
func (r *retention) has(root node.Hash) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.count[root] > 0
}

// size returns how many roots are retained.
func (r *retention) size() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.roots)
}

// latest returns the newest retained root.
func (r *retention) latest() (node.Hash, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.roots) == 0 {
		return node.Hash{}, false
	}
	return r.roots[len(r.roots)-1].root, true
}

// plan adds the ref moves that publish root to b and returns a func that
// updates the in-memory view once b has committed.
func (r *retention) plan(b *tree.Batch, root node.Hash) func() {
	r.mu.RLock()
	if n := len(r.roots); n > 0 && r.roots[n-1].root == root {
		r.mu.RUnlock()
		return func() {}
	}
	seq := r.seq + 1
	drop := max(0, len(r.roots)+1-r.cap)
	dropped := append([]retained(nil), r.roots[:drop]...)
	r.mu.RUnlock()
	b.SetRef(retainRef(seq), root)
	for _, d := range dropped {
		b.DeleteRef(retainRef(d.seq))
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seq = seq
		r.roots = append(r.roots[len(dropped):], retained{seq, root})
		for _, d := range dropped {
			if r.count[d.root]--; r.count[d.root] <= 0 {
				delete(r.count, d.root)
			}
		}
		r.count[root]++
	}
}

// replace adds to b the ref moves that make roots (oldest first) the
// retained set, and returns a func that updates the in-memory view once b
// has committed. Its callers serialise it (Server.adoptMu).
func (r *retention) replace(b *tree.Batch, roots []node.Hash) func() {
	r.mu.RLock()
	old := append([]retained(nil), r.roots...)
	seq := r.seq
	r.mu.RUnlock()
	for _, d := range old {
		b.DeleteRef(retainRef(d.seq))
	}
	next := make([]retained, 0, len(roots))
	for _, root := range roots {
		seq++
		b.SetRef(retainRef(seq), root)
		next = append(next, retained{seq, root})
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seq = seq
		r.roots = next
		r.count = map[node.Hash]int{}
		for _, x := range next {
			r.count[x.root]++
		}
	}
}
