package net

import (
	"context"
	"iter"

	"github.com/arbor-sync/arbor/diff"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// diffChange is one key whose value differs between two trees; Old or New
// is nil when the key is absent on that side.
type diffChange = diff.Change

// diffTrees yields the records that differ between the trees at from and to
// in s, in key order, loading only the nodes on paths to differences.
func diffTrees(ctx context.Context, s *tree.Store, from, to node.Hash) iter.Seq2[diffChange, error] {
	return diff.Diff(ctx, s, from, s, to, diff.Options{})
}
