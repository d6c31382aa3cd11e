package diff

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// indexSource serves a list of nodes by position: hash h names node
// h[0] mod len. With TrustHashes it lets a fuzzer wire arbitrary node
// graphs (cycles, shared children, wrong levels and bounds) without
// finding hash preimages.
type indexSource []*node.Node

func (s indexSource) Nodes(_ context.Context, hs []node.Hash) ([]*node.Node, error) {
	out := make([]*node.Node, len(hs))
	for i, h := range hs {
		out[i] = s[int(h.Bytes()[0])%len(s)]
	}
	return out, nil
}

// encodeFuzzInput packs raw nodes as uvarint-length-prefixed records.
func encodeFuzzInput(raws [][]byte) []byte {
	var b []byte
	for _, r := range raws {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return b
}

// decodeFuzzInput unpacks up to 64 nodes, skipping records that do not
// decode.
func decodeFuzzInput(b []byte) []*node.Node {
	var out []*node.Node
	for len(b) > 0 && len(out) < 64 {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			break
		}
		if nd, err := node.Decode(b[w : w+int(n)]); err == nil {
			out = append(out, nd)
		}
		b = b[w+int(n):]
	}
	return out
}

// indexTrees renumbers the nodes of the trees at roots (in s) so that a
// child reference's first byte is the child's position, roots first.
func indexTrees(t testing.TB, s *tree.Store, roots ...node.Hash) [][]byte {
	ctx := context.Background()
	pos := map[node.Hash]int{}
	var order []node.Hash
	add := func(h node.Hash) {
		if _, ok := pos[h]; !ok {
			pos[h] = len(order)
			order = append(order, h)
		}
	}
	for _, r := range roots {
		add(r)
	}
	for i := 0; i < len(order) && i < 250; i++ {
		n, err := s.Node(ctx, order[i])
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < n.Len() && n.Level() > 0; j++ {
			h, _ := n.Child(j)
			add(h)
		}
	}
	raws := make([][]byte, 0, len(order))
	for _, h := range order {
		n, err := s.Node(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if n.Level() == 0 {
			raws = append(raws, n.Raw())
			continue
		}
		es := make([]node.Entry, n.Len())
		for j := range es {
			c, cnt := n.Child(j)
			fake := fakeHash(byte(pos[c]))
			es[j] = node.Entry{Key: n.Key(j), Payload: node.AppendChildPayload(nil, fake, cnt)}
		}
		raws = append(raws, node.Encode(node.XXH3, n.Level(), es))
	}
	return raws
}

// FuzzDiff wires arbitrary node graphs into trees and diffs them. Diff
// must never panic or loop, and what it yields must be in strictly
// ascending key order. The seeds are large, so run it with a short
// -fuzzminimizetime (say 2s) or minimization stalls the run for minutes.
func FuzzDiff(f *testing.F) {
	s := openStore(f, smallConfig)
	r := rand.New(rand.NewPCG(4, 4))
	ma := randModel(r, 60, 200)
	for _, mb := range []model{mutate(r, ma, 5, 200), mutate(r, ma, 40, 200), {}} {
		ra, rb := build(f, s, ma), build(f, s, mb)
		f.Add(encodeFuzzInput(indexTrees(f, s, ra, rb)))
	}
	f.Add(encodeFuzzInput([][]byte{leafRaw("a", "b"), leafRaw("b", "c")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes := decodeFuzzInput(data)
		if len(nodes) == 0 {
			return
		}
		src := indexSource(nodes)
		h0, h1 := fakeHash(0), fakeHash(1)
		for _, mb := range []int{4, 1024} {
			var last []byte
			n := 0
			for c, err := range Diff(context.Background(), src, h0, src, h1, Options{TrustHashes: true, MaxBatch: mb}) {
				if err != nil {
					break
				}
				if n > 0 && bytes.Compare(c.Key, last) <= 0 {
					t.Fatalf("key %q after %q", c.Key, last)
				}
				if c.Old == nil && c.New == nil {
					t.Fatalf("change %q has neither value", c.Key)
				}
				last = c.Key
				n++
				if n > 1<<20 {
					t.Fatalf("more than %d changes from %d nodes", n, len(nodes))
				}
			}
		}
	})
}

// fakeHash returns an xxh3-width hash whose first byte is b (never the
// zero Hash): an address that test sources resolve by position.
func fakeHash(b byte) node.Hash {
	raw := make([]byte, node.XXH3.Size())
	raw[0], raw[len(raw)-1] = b, 0xAA
	h, _ := node.XXH3.HashOf(raw)
	return h
}
