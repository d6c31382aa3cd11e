package diff

import (
	"bytes"
	"context"
	"fmt"
	"iter"

	"github.com/arbor-sync/arbor/node"
)

// Conflict is a key that both sides changed since the base, to different
// results: the server's version wins and the local one is overridden.
// Local and Server are the two sides' values, nil when the key is absent
// (deleted or never inserted) on that side.
type Conflict struct {
	Key           []byte
	Local, Server *node.Value
}

// MergeResult is the outcome of a three-way merge as edits for each side.
// Each Change's Old is the value currently on the side it is applied to,
// and its New the merged value. All three lists are in ascending key order.
type MergeResult struct {
	// ToServer holds the keys only the local side changed: apply them to
	// the server.
	ToServer []Change
	// ToLocal holds the keys where the server's version differs from the
	// local one after the merge: those only the server changed, and the
	// conflicts, resolved to the server's version. Apply them locally.
	ToLocal []Change
	// Overridden lists the conflicts: local changes the server's version
	// replaced.
	Overridden []Conflict
}

// Outcome is the three-way merge of one key that changed since the base on
// at least one side. Base, Local and Server are the key's value on each
// side, nil when absent. The methods derive what each side must do.
type Outcome struct {
	Key                 []byte
	Base, Local, Server *node.Value
}

func equalValues(a, b *node.Value) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// ToServer returns the change to apply to the server, if the key changed
// only on the local side.
func (o Outcome) ToServer() (Change, bool) {
	if !equalValues(o.Local, o.Base) && equalValues(o.Server, o.Base) {
		return Change{Key: o.Key, Old: o.Server, New: o.Local}, true
	}
	return Change{}, false
}

// ToLocal returns the change to apply to the local side, if the server
// changed the key and the local side does not already hold the server's
// version (the server wins conflicts).
func (o Outcome) ToLocal() (Change, bool) {
	if !equalValues(o.Server, o.Base) && !equalValues(o.Local, o.Server) {
		return Change{Key: o.Key, Old: o.Local, New: o.Server}, true
	}
	return Change{}, false
}

// Overridden returns the conflict, if both sides changed the key to
// different results.
func (o Outcome) Overridden() (Conflict, bool) {
	if !equalValues(o.Local, o.Base) && !equalValues(o.Server, o.Base) && !equalValues(o.Local, o.Server) {
		return Conflict{Key: o.Key, Local: o.Local, Server: o.Server}, true
	}
	return Conflict{}, false
}

// Merges streams the three-way merge of the local and server trees
// against their common base, in ascending key order: one Outcome per key
// whose local and server values differ and at least one of which changed
// since the base. Keys both sides changed to the same result need nothing
// and are not yielded; if localRoot equals serverRoot nothing is loaded.
//
// It runs two Diffs (base→local and base→server) with opts and joins them
// by key; opts.Stats counts both. An error is a Diff's, wrapped to name
// the diff that failed (base→local or base→server); it is yielded once
// with a zero Outcome, after which nothing more is yielded. Keys and
// values alias node bytes as described for Change.
func Merges(ctx context.Context, base, local, server node.Source, baseRoot, localRoot, serverRoot node.Hash, opts Options) iter.Seq2[Outcome, error] {
	return func(yield func(Outcome, error) bool) {
		if localRoot == serverRoot {
			return
		}
		nextL, stopL := iter.Pull2(Diff(ctx, base, baseRoot, local, localRoot, opts))
		defer stopL()
		nextS, stopS := iter.Pull2(Diff(ctx, base, baseRoot, server, serverRoot, opts))
		defer stopS()
		cl, errL, okL := nextL()
		cs, errS, okS := nextS()
		for okL || okS {
			if okL && errL != nil {
				yield(Outcome{}, fmt.Errorf("merge: diff base→local: %w", errL))
				return
			}
			if okS && errS != nil {
				yield(Outcome{}, fmt.Errorf("merge: diff base→server: %w", errS))
				return
			}
			var o Outcome
			switch c := bytes.Compare(cl.Key, cs.Key); {
			case okL && (!okS || c < 0):
				o = Outcome{Key: cl.Key, Base: cl.Old, Local: cl.New, Server: cl.Old}
				cl, errL, okL = nextL()
			case okS && (!okL || c > 0):
				o = Outcome{Key: cs.Key, Base: cs.Old, Local: cs.Old, Server: cs.New}
				cs, errS, okS = nextS()
			default:
				o = Outcome{Key: cl.Key, Base: cl.Old, Local: cl.New, Server: cs.New}
				cl, errL, okL = nextL()
				cs, errS, okS = nextS()
			}
			if equalValues(o.Local, o.Server) {
				continue
			}
			if !yield(o, nil) {
				return
			}
		}
	}
}

// Merge is the three-way merge of a sync, the server winning: it collects
// Merges into the edits each side needs. A key changed only locally goes
// to ToServer; one changed only on the server goes to ToLocal; one changed
// on both sides (any mix of update, insert and delete) takes the server's
// version, which goes to ToLocal unless the local side already has it, and
// when the two differ the local change is listed in Overridden. Applying
// ToServer to the server and ToLocal to the local side (see Edits) gives
// both the same records.
func Merge(ctx context.Context, base, local, server node.Source, baseRoot, localRoot, serverRoot node.Hash, opts Options) (*MergeResult, error) {
	res := &MergeResult{}
	for o, err := range Merges(ctx, base, local, server, baseRoot, localRoot, serverRoot, opts) {
		if err != nil {
			return nil, err
		}
		if c, ok := o.ToServer(); ok {
			res.ToServer = append(res.ToServer, c)
		}
		if c, ok := o.ToLocal(); ok {
			res.ToLocal = append(res.ToLocal, c)
		}
		if c, ok := o.Overridden(); ok {
			res.Overridden = append(res.Overridden, c)
		}
	}
	return res, nil
}
