package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/arbor-sync/arbor/node"
)

// Problem is one defect Verify found.
type Problem struct {
	Hash node.Hash // the node or blob concerned
	Err  error     // what is wrong; wraps node.ErrNotFound or node.ErrCorrupt
}

func (p Problem) String() string { return fmt.Sprintf("%s: %v", p.Hash, p.Err) }

// VerifyReport summarises a Verify run.
type VerifyReport struct {
	Root     node.Hash
	Nodes    int       // nodes checked
	Blobs    int       // value blobs checked
	Records  uint64    // records under the root
	Problems []Problem // empty when the tree is sound
}

// ErrVerify is wrapped by Verify's error when the tree has problems.
var ErrVerify = errors.New("tree verification failed")

// maxProblems caps the problems Verify collects.
const maxProblems = 1000

// Verify re-reads and re-hashes every node and value blob reachable from
// root, and checks the tree's structure: levels, key order and bounds, and
// subtree counts. It reports every problem it finds (up to 1000) and
// returns an error wrapping ErrVerify if there is any.
func (s *Store) Verify(ctx context.Context, root node.Hash) (*VerifyReport, error) {
	return s.verify(ctx, root, nil)
}

// Scope is the key set VerifyScope checks; scope.Scope implements it.
type Scope interface {
	// Overlaps reports whether a key k with lo < k ≤ hi is in the scope
	// (nil lo or hi: unbounded).
	Overlaps(lo, hi []byte) bool
	// Contains reports whether key is in the scope.
	Contains(key []byte) bool
	String() string
}

// VerifyScope checks a partial replica: the tree at root pruned to sc. It
// re-reads and re-hashes every node whose key interval overlaps sc (each
// must be present) and the value blobs of keys in sc, with the structural
// checks of Verify; nodes wholly outside sc are not required. Since every
// node is checked against the hash its parent holds, up to root, a clean
// report proves that the records the store holds in sc are exactly the
// records in sc of the tree whose root hash is root: nothing missing,
// nothing extra. The error wraps ErrVerify and names the scope.
func (s *Store) VerifyScope(ctx context.Context, root node.Hash, sc Scope) (*VerifyReport, error) {
	rep, err := s.verify(ctx, root, sc)
	if err != nil && errors.Is(err, ErrVerify) {
		err = fmt.Errorf("scope %s: %w", sc, err)
	}
	return rep, err
}

func (s *Store) verify(ctx context.Context, root node.Hash, sc Scope) (*VerifyReport, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	rep := &VerifyReport{Root: root}
	type item struct {
		h          node.Hash
		level      int // expected level, -1 for the root
		count      uint64
		lo, hi     []byte // keys must be > lo (if non-nil) and ≤ hi (if non-nil)
		open       bool   // on the right edge: unbounded above for scope tests
		checkCount bool
	}
	problem := func(h node.Hash, err error) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, Problem{Hash: h, Err: err})
		}
	}
	queue := []item{{h: root, level: -1, open: true}}
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		it := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		n, err := s.readVerified(it.h)
		rep.Nodes++
		if err != nil {
			problem(it.h, err)
			continue
		}
		if it.level >= 0 && n.Level() != it.level {
			problem(it.h, fmt.Errorf("%w: level %d, parent expects %d", node.ErrCorrupt, n.Level(), it.level))
			continue
		}
		if it.checkCount && n.Count() != it.count {
			problem(it.h, fmt.Errorf("%w: holds %d records, parent says %d", node.ErrCorrupt, n.Count(), it.count))
		}
		if it.level < 0 {
			rep.Records = n.Count()
		}
		if n.Len() > 0 {
			if it.lo != nil && bytes.Compare(n.Key(0), it.lo) <= 0 {
				problem(it.h, fmt.Errorf("%w: first key %q not above the previous separator %q", node.ErrCorrupt, n.Key(0), it.lo))
			}
			if it.hi != nil && !bytes.Equal(n.LastKey(), it.hi) {
				problem(it.h, fmt.Errorf("%w: last key %q, parent separator %q", node.ErrCorrupt, n.LastKey(), it.hi))
			}
		}
		if n.IsLeaf() {
			for i := 0; i < n.Len(); i++ {
				if sc != nil && !sc.Contains(n.Key(i)) {
					continue
				}
				if v := n.Value(i); v.IsRef {
					rep.Blobs += s.verifyValue(ctx, v, problem)
				}
			}
			continue
		}
		lo := it.lo
		for i := n.Len() - 1; i >= 0; i-- {
			h, c := n.Child(i)
			var clo []byte
			if i > 0 {
				clo = n.Key(i - 1)
			} else {
				clo = lo
			}
			// A search past the greatest key ends in the right edge's last
			// child, so its interval is unbounded above.
			open := it.open && i == n.Len()-1
			shi := n.Key(i)
			if open {
				shi = nil
			}
			if sc != nil && !sc.Overlaps(clo, shi) {
				continue // pruned: wholly outside the scope
			}
			queue = append(queue, item{h: h, level: n.Level() - 1, count: c, checkCount: true, lo: clo, hi: n.Key(i), open: open})
		}
	}
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("root %s: %w: %d problem(s), first: %v", root, ErrVerify, len(rep.Problems), rep.Problems[0])
	}
	return rep, nil
}

// readVerified reads a node from disk (bypassing the cache), rebuilding it
// from its delta and a hash-checked base if it is stored as one, and checks
// its hash.
func (s *Store) readVerified(h node.Hash) (*node.Node, error) {
	raw, err := s.readStored(h)
	if err != nil {
		return nil, err
	}
	if isDelta(raw) {
		d, err := decodeDelta(s.alg, raw)
		if err != nil {
			return nil, err
		}
		braw, err := s.readStored(d.base)
		if err != nil {
			return nil, fmt.Errorf("delta base %s: %w", d.base, err)
		}
		if isDelta(braw) {
			return nil, fmt.Errorf("delta base %s: %w: stored as a delta", d.base, node.ErrCorrupt)
		}
		base, err := node.Decode(braw)
		if err != nil {
			return nil, fmt.Errorf("delta base %s: %w", d.base, err)
		}
		if got := base.Hash(); got != d.base {
			return nil, fmt.Errorf("delta base %s: %w: bytes hash to %s", d.base, node.ErrCorrupt, got)
		}
		if raw, err = applyDelta(base, d); err != nil {
			return nil, err
		}
	}
	n, err := node.Decode(raw)
	if err != nil {
		return nil, err
	}
	if got := n.Hash(); got != h {
		return nil, fmt.Errorf("%w: bytes hash to %s", node.ErrCorrupt, got)
	}
	return n, nil
}

// readStored returns node h's stored bytes: a whole node or a delta.
func (s *Store) readStored(h node.Hash) ([]byte, error) {
	if h == s.EmptyRoot() {
		return node.EmptyLeaf(s.alg), nil
	}
	raw, err := s.readStoredNode(h)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("node missing: %w", node.ErrNotFound)
	}
	return raw, err
}

func (s *Store) verifyValue(ctx context.Context, v node.Value, problem func(node.Hash, error)) int {
	idx, err := s.Blob(ctx, v.Ref)
	if err != nil {
		problem(v.Ref, err)
		return 1
	}
	chunks, total, err := node.DecodeValueIndex(s.alg, idx)
	if err != nil {
		problem(v.Ref, err)
		return 1
	}
	if total != v.Size {
		problem(v.Ref, fmt.Errorf("%w: value index describes %d bytes, leaf says %d", node.ErrCorrupt, total, v.Size))
	}
	for _, c := range chunks {
		b, err := s.Blob(ctx, c.Hash)
		if err != nil {
			problem(c.Hash, err)
		} else if len(b) != int(c.Size) {
			problem(c.Hash, fmt.Errorf("%w: chunk of %d bytes, index says %d", node.ErrCorrupt, len(b), c.Size))
		}
	}
	return 1 + len(chunks)
}
