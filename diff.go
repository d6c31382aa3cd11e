package arbor

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/arbor-sync/arbor/diff"
	"github.com/arbor-sync/arbor/node"
)

// BaseRef names the ref that holds the last root a client agreed on with
// its server. Changes between it and the head are the local changes that
// the next sync pushes.
const BaseRef = "base"

// Change is one difference between two states. Old is nil for an added key
// and New is nil for a removed one.
type Change struct {
	Key      []byte
	Old, New []byte
}

// Kind returns "added", "removed" or "modified".
func (c Change) Kind() string {
	switch {
	case c.Old == nil:
		return "added"
	case c.New == nil:
		return "removed"
	default:
		return "modified"
	}
}

// DiffOptions restrict a diff.
type DiffOptions struct {
	Range Range
}

// Diff streams the changes that turn the tree at from into the tree at to,
// both in this store, in ascending key order. Its cost grows with the size
// of the difference, not of the trees: equal subtrees are skipped by hash.
func (db *DB) Diff(ctx context.Context, from, to Hash, opts DiffOptions) iter.Seq2[Change, error] {
	return diffBetween(ctx, db, from, db, to, opts)
}

// DiffWith streams the changes that turn db's current tree into other's.
// Stores built with different chunker configurations cannot be compared
// (their trees never share nodes, and equal records would not give equal
// roots): that gives an error wrapping ErrConfigMismatch.
func (db *DB) DiffWith(ctx context.Context, other *DB, opts DiffOptions) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		if a, b := db.store.Config(), other.store.Config(); a != b || db.Hash() != other.Hash() {
			yield(Change{}, fmt.Errorf("diff %s against %s: %w (%s %+v vs %s %+v)", db.Dir(), other.Dir(), ErrConfigMismatch, db.Hash(), a, other.Hash(), b))
			return
		}
		from, err := db.Root(ctx)
		if err != nil {
			yield(Change{}, err)
			return
		}
		to, err := other.Root(ctx)
		if err != nil {
			yield(Change{}, err)
			return
		}
		diffBetween(ctx, db, from, other, to, opts)(yield)
	}
}

// ErrRootNotRetained reports a root hash whose tree a store no longer
// holds (garbage collection removed it) or never held.
var ErrRootNotRetained = errors.New("root no longer retained")

// checkRoot fails with ErrRootNotRetained if db does not hold root's node.
func checkRoot(db *DB, root Hash) error {
	if root == db.EmptyRoot() {
		return nil
	}
	ok, err := db.store.HasNode(root)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("store %s: root %s: %w (garbage collection removed it, or the store never held it; 'arbor status' lists the roots it keeps)", db.Dir(), root, ErrRootNotRetained)
	}
	return nil
}

func diffBetween(ctx context.Context, a *DB, from Hash, b *DB, to Hash, opts DiffOptions) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		for _, r := range []struct {
			db   *DB
			root Hash
		}{{a, from}, {b, to}} {
			if err := checkRoot(r.db, r.root); err != nil {
				yield(Change{}, err)
				return
			}
		}
		for c, err := range diff.Diff(ctx, a.store, from, b.store, to, diff.Options{Range: opts.Range.treeRange()}) {
			if err != nil {
				yield(Change{}, err)
				return
			}
			out := Change{Key: c.Key}
			if out.Old, err = readOpt(ctx, a, c.Old); err == nil {
				out.New, err = readOpt(ctx, b, c.New)
			}
			if !yield(out, err) || err != nil {
				return
			}
		}
	}
}

func readOpt(ctx context.Context, db *DB, v *node.Value) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	b, err := db.store.ReadValue(ctx, *v)
	if b == nil && err == nil {
		b = []byte{} // present but empty, distinct from absent
	}
	return b, err
}

// Status describes a store's sync state.
type Status struct {
	Head   Hash   // the current root
	Base   Hash   // the last root agreed with the server (EmptyRoot if never synced)
	Synced bool   // whether the store has ever synced
	Local  uint64 // keys changed locally since Base
	Count  uint64 // records in Head
}

// Status returns the head root, the base root and the number of local
// changes since the last sync.
func (db *DB) Status(ctx context.Context) (Status, error) {
	var st Status
	var err error
	if st.Head, err = db.Root(ctx); err != nil {
		return st, err
	}
	var ok bool
	if st.Base, ok, err = db.store.Ref(BaseRef); err != nil {
		return st, err
	}
	st.Synced = ok
	if !ok {
		st.Base = db.EmptyRoot()
	}
	if st.Count, err = db.store.Count(ctx, st.Head); err != nil {
		return st, err
	}
	for _, err := range diff.Diff(ctx, db.store, st.Base, db.store, st.Head, diff.Options{}) {
		if err != nil {
			return st, err
		}
		st.Local++
	}
	return st, nil
}
