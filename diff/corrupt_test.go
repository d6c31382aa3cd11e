package diff

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

func leafRaw(keys ...string) []byte {
	es := make([]node.Entry, len(keys))
	for i, k := range keys {
		es[i] = node.Entry{Key: []byte(k), Payload: node.InlineValue([]byte("v" + k)).AppendPayload(nil)}
	}
	return node.Encode(node.XXH3, 0, es)
}

type childRef struct {
	key   string
	h     node.Hash
	count uint64
}

func branchRaw(level int, kids ...childRef) []byte {
	es := make([]node.Entry, len(kids))
	for i, c := range kids {
		es[i] = node.Entry{Key: []byte(c.key), Payload: node.AppendChildPayload(nil, c.h, c.count)}
	}
	return node.Encode(node.XXH3, level, es)
}

// putRaw stores encoded nodes and returns their hashes.
func putRaw(t *testing.T, s *tree.Store, raws ...[]byte) []node.Hash {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	hs := make([]node.Hash, len(raws))
	for i, raw := range raws {
		if hs[i], err = b.PutNode(raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return hs
}

// tamperSource answers through a Store, then lets the test alter the answer.
type tamperSource struct {
	*tree.Store
	tamper func(hs []node.Hash, ns []*node.Node) []*node.Node
}

func (s tamperSource) Nodes(ctx context.Context, hs []node.Hash) ([]*node.Node, error) {
	ns, err := s.Store.Nodes(ctx, hs)
	if err != nil {
		return nil, err
	}
	return s.tamper(hs, ns), nil
}

// diffErr runs a diff that must end in an error and returns it, checking
// that nothing follows the error.
func diffErr(t *testing.T, from node.Source, fromRoot node.Hash, to node.Source, toRoot node.Hash) error {
	t.Helper()
	return diffErrOpts(t, from, fromRoot, to, toRoot, Options{})
}

func diffErrOpts(t *testing.T, from node.Source, fromRoot node.Hash, to node.Source, toRoot node.Hash, opts Options) error {
	t.Helper()
	var got error
	for _, err := range Diff(context.Background(), from, fromRoot, to, toRoot, opts) {
		if got != nil {
			t.Fatalf("yielded after the error %v", got)
		}
		got = err
	}
	if got == nil {
		t.Fatal("diff succeeded; want an error")
	}
	return got
}

// TestDiffRejectsCorruptTrees feeds Diff trees whose nodes are each well
// formed but disagree with their parents, and Sources that answer wrongly.
// Each must end the diff with an error naming the node, in both
// directions, never a panic.
func TestDiffRejectsCorruptTrees(t *testing.T) {
	s := openStore(t, smallConfig)
	hs := putRaw(t, s, leafRaw("a", "b"), leafRaw("a", "d"), leafRaw("c", "d"))
	ab, ad, cd := hs[0], hs[1], hs[2]
	missing := node.XXH3.Sum([]byte("not stored"))
	cases := []struct {
		name    string
		root    []byte
		target  error
		mention string
		// skipped: the bad child is also in the valid tree under the same
		// key, so a diff against it rightly skips the child unloaded.
		skipped bool
	}{
		{"last key differs from the parent's", branchRaw(1, childRef{"c", ab, 2}), node.ErrCorrupt, ab.String(), false},
		{"child at the wrong level", branchRaw(2, childRef{"b", ab, 2}), node.ErrCorrupt, ab.String(), false},
		{"record count differs from the parent's", branchRaw(1, childRef{"b", ab, 5}), node.ErrCorrupt, ab.String(), true},
		{"keys below the left neighbour's bound", branchRaw(1, childRef{"b", ab, 2}, childRef{"d", ad, 2}), node.ErrCorrupt, ad.String(), false},
		{"empty leaf below a branch", branchRaw(1, childRef{"b", node.EmptyRoot(node.XXH3), 1}), node.ErrCorrupt, node.EmptyRoot(node.XXH3).String(), false},
		{"missing child", branchRaw(1, childRef{"b", ab, 2}, childRef{"z", missing, 1}), node.ErrNotFound, missing.String(), false},
	}
	// A valid tree with some of the same keys, to diff against.
	valid := putRaw(t, s, branchRaw(1, childRef{"b", ab, 2}, childRef{"d", cd, 2}))[0]
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := putRaw(t, s, c.root)[0]
			others := []node.Hash{node.EmptyRoot(node.XXH3), valid}
			if c.skipped {
				others = others[:1]
			}
			for _, other := range others {
				// The checks against the parent hold with TrustHashes too.
				trust := Options{TrustHashes: true}
				for _, err := range []error{diffErr(t, s, other, s, root), diffErr(t, s, root, s, other), diffErrOpts(t, s, root, s, other, trust)} {
					if !errors.Is(err, c.target) || !strings.Contains(err.Error(), c.mention) {
						t.Errorf("error %q; want %v naming %s", err, c.target, c.mention)
					}
				}
			}
		})
	}
}

// TestDiffRejectsLyingSources checks answers of the wrong length, nil
// nodes and nodes that do not hash to what was asked.
func TestDiffRejectsLyingSources(t *testing.T) {
	s := openStore(t, smallConfig)
	hs := putRaw(t, s, leafRaw("a", "b"), leafRaw("c", "d"))
	root := putRaw(t, s, branchRaw(1, childRef{"b", hs[0], 2}, childRef{"d", hs[1], 2}))[0]
	other := putRaw(t, s, leafRaw("x"))[0]
	wrong, _ := s.Node(context.Background(), other)
	cases := map[string]func([]node.Hash, []*node.Node) []*node.Node{
		"short answer": func(_ []node.Hash, ns []*node.Node) []*node.Node { return ns[:len(ns)-1] },
		"long answer":  func(_ []node.Hash, ns []*node.Node) []*node.Node { return append(ns, wrong) },
		"nil node":     func(_ []node.Hash, ns []*node.Node) []*node.Node { ns[len(ns)-1] = nil; return ns },
		"another node": func(_ []node.Hash, ns []*node.Node) []*node.Node { ns[len(ns)-1] = wrong; return ns },
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			bad := tamperSource{s, func(hs []node.Hash, ns []*node.Node) []*node.Node {
				out := make([]*node.Node, len(ns))
				copy(out, ns)
				return tamper(hs, out)
			}}
			for _, err := range []error{diffErr(t, bad, root, s, node.EmptyRoot(node.XXH3)), diffErr(t, s, node.EmptyRoot(node.XXH3), bad, root)} {
				if !errors.Is(err, node.ErrCorrupt) {
					t.Errorf("error %v; want node.ErrCorrupt", err)
				}
			}
		})
	}
}
