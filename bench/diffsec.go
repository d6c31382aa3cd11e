package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/arbor-sync/arbor/diff"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// DiffResult is the diff section for one W(n, d): diff.Diff of the base
// and changed trees against a full scan that merge-compares every record
// of both.
type DiffResult struct {
	N           int  `json:"n"`
	D           int  `json:"d"`
	Changes     int  `json:"changes"`
	NodesLoaded int  `json:"nodes_loaded"`
	Batches     int  `json:"batches"`
	ScanNodes   int  `json:"scan_nodes"`
	ScanChanges int  `json:"scan_changes"`
	Diff        Stat `json:"diff_s"`
	Scan        Stat `json:"scan_s"`
}

// diffFixture is a store holding both sides of a workload.
type diffFixture struct {
	dir           string
	base, changed node.Hash
}

// buildDiffFixture builds W(n, d)'s base tree in a new store in dir and
// applies its edits to get the changed tree.
func buildDiffFixture(ctx context.Context, w *Workload, dir string) (*diffFixture, error) {
	s, base, _, err := buildArbor(ctx, w, dir, false, false)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := s.NewBatch()
	if err != nil {
		return nil, err
	}
	changed, err := b.Apply(ctx, base, w.Edits())
	if err != nil {
		b.Discard()
		return nil, fmt.Errorf("apply W(%d, %d): %w", w.N, w.D, err)
	}
	b.SetRef("changed", changed)
	if err := b.Commit(ctx); err != nil {
		return nil, err
	}
	return &diffFixture{dir: dir, base: base, changed: changed}, nil
}

// runDiff measures diff.Diff against a full scan for W(n, d) over
// cfg.Runs runs, each on a freshly opened store (cold node cache).
func runDiff(ctx context.Context, cfg *Config, n, d int) (*DiffResult, error) {
	w, err := NewWorkload(n, d, cfg.ValueSize, cfg.Seed, cfg.Clustered)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.TmpDir, "diff-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fx, err := buildDiffFixture(ctx, w, filepath.Join(dir, "s"))
	if err != nil {
		return nil, err
	}
	res := &DiffResult{N: n, D: d}
	var dt, st []float64
	for run := range cfg.Runs {
		for i, which := range []string{"diff", "scan"} {
			if run%2 == 1 {
				which = []string{"scan", "diff"}[i]
			}
			s, err := tree.Open(fx.dir, &tree.Options{NoSync: true})
			if err != nil {
				return nil, err
			}
			start := time.Now()
			switch which {
			case "diff":
				var stats diff.Stats
				changes := 0
				for _, err := range diff.Diff(ctx, s, fx.base, s, fx.changed, diff.Options{Stats: &stats}) {
					if err != nil {
						s.Close()
						return nil, fmt.Errorf("diff: %w", err)
					}
					changes++
				}
				dt = append(dt, time.Since(start).Seconds())
				res.Changes, res.NodesLoaded, res.Batches = changes, stats.NodesLoaded, stats.Batches
			case "scan":
				changes, err := scanDiff(ctx, s, fx.base, fx.changed)
				if err != nil {
					s.Close()
					return nil, err
				}
				st = append(st, time.Since(start).Seconds())
				res.ScanChanges = changes
			}
			if err := s.Close(); err != nil {
				return nil, err
			}
		}
	}
	res.Diff, res.Scan = NewStat(dt), NewStat(st)
	s, err := tree.Open(fx.dir, &tree.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	a, err := countNodes(ctx, s, fx.base)
	if err != nil {
		return nil, err
	}
	b, err := countNodes(ctx, s, fx.changed)
	if err != nil {
		return nil, err
	}
	res.ScanNodes = a + b
	if res.Changes != d || res.ScanChanges != d {
		return nil, fmt.Errorf("W(%d, %d): diff found %d changes, scan %d, want %d", n, d, res.Changes, res.ScanChanges, d)
	}
	return res, nil
}

// scanDiff is the baseline: iterate every record of both trees in key
// order and compare, as a tool without subtree hashes must.
func scanDiff(ctx context.Context, s *tree.Store, a, b node.Hash) (int, error) {
	ia := s.NewIterator(ctx, a, tree.Range{})
	defer ia.Close()
	ib := s.NewIterator(ctx, b, tree.Range{})
	defer ib.Close()
	okA, okB := ia.Next(), ib.Next()
	changes := 0
	for okA || okB {
		switch c := cmpIter(okA, okB, ia, ib); {
		case c < 0:
			changes++
			okA = ia.Next()
		case c > 0:
			changes++
			okB = ib.Next()
		default:
			if !ia.Value().Equal(ib.Value()) {
				changes++
			}
			okA, okB = ia.Next(), ib.Next()
		}
	}
	if err := ia.Err(); err != nil {
		return 0, fmt.Errorf("scan: %w", err)
	}
	if err := ib.Err(); err != nil {
		return 0, fmt.Errorf("scan: %w", err)
	}
	return changes, nil
}

func cmpIter(okA, okB bool, a, b *tree.Iterator) int {
	switch {
	case !okA:
		return 1
	case !okB:
		return -1
	}
	return bytes.Compare(a.Key(), b.Key())
}

// countNodes returns the number of nodes of the tree at root.
func countNodes(ctx context.Context, s *tree.Store, root node.Hash) (int, error) {
	level := []node.Hash{root}
	total := 0
	for len(level) > 0 {
		total += len(level)
		var next []node.Hash
		for _, h := range level {
			n, err := s.Node(ctx, h)
			if err != nil {
				return 0, err
			}
			if n.IsLeaf() {
				continue
			}
			for i := range n.Len() {
				c, _ := n.Child(i)
				next = append(next, c)
			}
		}
		level = next
	}
	return total, nil
}
