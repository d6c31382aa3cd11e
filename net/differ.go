package net

import (
	"bytes"
	"context"
	"iter"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// diffChange is one key whose value differs between two trees; Old or New
// is nil when the key is absent on that side.
type diffChange struct {
	Key      []byte
	Old, New *node.Value
}

// diffTrees yields the records that differ between the trees at from and to
// in s, in key order. Yielded keys and values are valid only until the next
// iteration step.
//
// TODO(net): switch to diff.Diff once package diff lands; this fallback
// walks both trees whole.
func diffTrees(ctx context.Context, s *tree.Store, from, to node.Hash) iter.Seq2[diffChange, error] {
	return func(yield func(diffChange, error) bool) {
		if from == to {
			return
		}
		a := s.NewIterator(ctx, from, tree.Range{})
		defer a.Close()
		b := s.NewIterator(ctx, to, tree.Range{})
		defer b.Close()
		okA, okB := a.Next(), b.Next()
		for okA || okB {
			var c diffChange
			switch {
			case okA && (!okB || bytes.Compare(a.Key(), b.Key()) < 0):
				v := a.Value()
				c = diffChange{Key: a.Key(), Old: &v}
				okA = a.Next()
			case okB && (!okA || bytes.Compare(a.Key(), b.Key()) > 0):
				v := b.Value()
				c = diffChange{Key: b.Key(), New: &v}
				okB = b.Next()
			default:
				va, vb := a.Value(), b.Value()
				k := a.Key()
				okA, okB = a.Next(), b.Next()
				if va.Equal(vb) {
					continue
				}
				c = diffChange{Key: k, Old: &va, New: &vb}
			}
			if !yield(c, nil) {
				return
			}
		}
		if err := a.Err(); err != nil {
			yield(diffChange{}, err)
			return
		}
		if err := b.Err(); err != nil {
			yield(diffChange{}, err)
		}
	}
}
