package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

// Red-team tests of the per-store hash algorithm (node.Alg) in package
// tree. Each asserts the secure/correct behaviour. A test that names an "Attack" and an "Effect"
// describes the defect it found; every one is fixed and the test guards
// the fix.

func otherAlg(a node.Alg) node.Alg {
	if a == node.XXH3 {
		return node.BLAKE3
	}
	return node.XXH3
}

// nodeReadable reports whether root's node, read from disk (not the node
// cache, which holds the batch's own built nodes), decodes and hashes to
// root.
func nodeReadable(s *Store, root node.Hash) error {
	_, err := s.readVerified(root)
	return err
}

// TestRedTeamHashApplyValuesRefOfOtherAlg
//
// Promise (Batch.ApplyValues, Builder.AddValue): "a malformed stored value
// gives an error and writes nothing ... so that no unreadable node is
// written". Attack: hand a stored value whose Ref is an address of the
// other algorithm (say, from a diff of an xxh3 store applied to a blake3
// one, diff.Edits' documented use) or the zero Hash. Value.AppendPayload
// writes the Ref in its own width (16 bytes, 32, or none for the zero
// Hash), node.Build trusts it, and the batch stores a leaf that
// node.Decode rejects: the tree is unreadable from then on.
func TestRedTeamHashApplyValuesRefOfOtherAlg(t *testing.T) {
	ctx := context.Background()
	for _, alg := range node.Algs {
		for _, bad := range []struct {
			name string
			ref  node.Hash
		}{
			{"other-alg ref", otherAlg(alg).Sum([]byte("an index blob of the other hash"))},
			{"zero ref", node.Hash{}},
		} {
			t.Run(fmt.Sprintf("%s store, %s, ApplyValues", alg, bad.name), func(t *testing.T) {
				s := openTestHash(t, smallConfig, alg)
				v := node.RefValue(bad.ref, 5000)
				b, err := s.NewBatch()
				if err != nil {
					t.Fatal(err)
				}
				defer b.Discard()
				root, err := b.ApplyValues(ctx, s.EmptyRoot(), []StoredEdit{
					{Key: []byte("a"), Value: &node.Value{Inline: []byte("x"), Size: 1}},
					{Key: []byte("big"), Value: &v},
				})
				if err != nil {
					return // refused: correct
				}
				b.SetRef("head", root)
				if err := b.Commit(ctx); err != nil {
					return
				}
				if err := nodeReadable(s, root); err != nil {
					t.Fatalf("ApplyValues accepted a %s in a %s store and committed an unreadable tree: %v", bad.name, alg, err)
				}
			})
			t.Run(fmt.Sprintf("%s store, %s, Builder.AddValue", alg, bad.name), func(t *testing.T) {
				s := openTestHash(t, smallConfig, alg)
				b, err := s.NewBatch()
				if err != nil {
					t.Fatal(err)
				}
				defer b.Discard()
				bl := b.NewBuilder(ctx)
				if err := bl.Add([]byte("a"), []byte("x")); err != nil {
					t.Fatal(err)
				}
				if err := bl.AddValue([]byte("big"), node.RefValue(bad.ref, 5000)); err != nil {
					return // refused: correct
				}
				root, err := bl.Finish()
				if err != nil {
					return
				}
				b.SetRef("head", root)
				if err := b.Commit(ctx); err != nil {
					return
				}
				if err := nodeReadable(s, root); err != nil {
					t.Fatalf("Builder.AddValue accepted a %s in a %s store and committed an unreadable tree: %v", bad.name, alg, err)
				}
			})
		}
	}
}

// TestRedTeamHashSetRefOfOtherAlg
//
// Promise: refs are read in the store's width; a ref that does not parse
// is corruption. Attack: Batch.SetRef with an address of the other
// algorithm, or the zero Hash (a careless caller, e.g. a root parsed from
// hex for the wrong store). Commit stores its bytes as they are (16 or 0
// bytes in a blake3 store), after which Refs() fails for every ref and
// GC, which marks from Refs(), can never run again.
func TestRedTeamHashSetRefOfOtherAlg(t *testing.T) {
	ctx := context.Background()
	for _, alg := range node.Algs {
		for _, bad := range []struct {
			name string
			h    node.Hash
		}{
			{"other-alg root", node.EmptyRoot(otherAlg(alg))},
			{"zero root", node.Hash{}},
		} {
			t.Run(fmt.Sprintf("%s store, %s", alg, bad.name), func(t *testing.T) {
				s := openTestHash(t, smallConfig, alg)
				head, err := s.Update(ctx, "head", []Edit{{Key: []byte("k"), Value: []byte("v")}})
				if err != nil {
					t.Fatal(err)
				}
				b, err := s.NewBatch()
				if err != nil {
					t.Fatal(err)
				}
				b.SetRef("mistake", bad.h)
				if err := b.Commit(ctx); err != nil {
					return // refused: correct
				}
				if _, err := s.Refs(); err != nil {
					t.Errorf("after SetRef(%s) of a %s store committed, Refs fails: %v", bad.name, alg, err)
				}
				if _, err := s.GC(ctx); err != nil {
					t.Errorf("after SetRef(%s) of a %s store committed, GC fails: %v", bad.name, alg, err)
				}
				if got, err := s.Root("head"); err != nil || got != head {
					t.Errorf("head %s, %v", got, err)
				}
			})
		}
	}
}

// TestRedTeamHashReinitForgetsOldAlgNodes
//
// Promise: "hashes of different algorithms are never equal"; a blake3
// store holds no xxh3 node. Attack: read the xxh3 empty tree (any read of
// an empty store does: Count, Get, an iterator), then Reinit to blake3,
// as a replica's first sync does. Reinit keeps the node cache, so the
// blake3 store still vouches for the xxh3 empty leaf (HasNode true, Node
// returns an xxh3 node).
func TestRedTeamHashReinitForgetsOldAlgNodes(t *testing.T) {
	ctx := context.Background()
	s := openTestHash(t, smallConfig, 0) // the default hash: Reinit may change it
	old := s.EmptyRoot()
	if _, err := s.Count(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Reinit(smallConfig, node.BLAKE3); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasNode(old); err != nil || ok {
		t.Errorf("blake3 store after Reinit: HasNode(xxh3 empty root) = %v, %v; want false", ok, err)
	}
	if held, err := s.HasNodes([]node.Hash{old}); err != nil || held[0] {
		t.Errorf("blake3 store after Reinit: HasNodes(xxh3 empty root) = %v, %v; want false", held, err)
	}
	if n, err := s.Node(ctx, old); err == nil {
		t.Errorf("blake3 store after Reinit serves a %s node for the xxh3 empty root", n.Alg())
	}
}

// TestRedTeamHashReinitWithBatchInFlight
//
// Promise: Reinit changes only a store that holds nothing; net.Sync calls
// it in a replica's first sync, and "writes made while Sync runs stay
// local changes" (arbor.DB.Sync), so a write may be in flight. Attack: a
// batch has stored an out-of-line value (xxh3 chunks and index, not yet
// committed, so invisible to Reinit's scan); Reinit switches the store to
// blake3; the batch then builds its leaf and commits. Effect: a blake3
// leaf holding a 16-byte xxh3 reference, under the store's head: the tree
// is unreadable. Reinit should refuse while a batch (or any write) is in
// flight, or the batch should fail.
func TestRedTeamHashReinitWithBatchInFlight(t *testing.T) {
	ctx := context.Background()
	s := openTestHash(t, smallConfig, node.XXH3)
	root0 := s.EmptyRoot()
	big := bytes.Repeat([]byte("0123456789abcdef"), 600) // 9600 bytes: out of line
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	v, err := b.StoreValue(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reinit(smallConfig, node.BLAKE3); err != nil {
		return // refused while a batch is open: correct
	}
	_ = root0
	root, err := b.ApplyValues(ctx, s.EmptyRoot(), []StoredEdit{{Key: []byte("big"), Value: &v}})
	if err != nil {
		return // the batch failed: acceptable
	}
	b.ExpectRef("head", node.Hash{}, false)
	b.SetRef("head", root)
	if err := b.Commit(ctx); err != nil {
		return // acceptable
	}
	head, err := s.Root("head")
	if err != nil {
		t.Fatalf("Reinit ran under an open batch; its commit left head unreadable: %v", err)
	}
	got, err := s.Get(ctx, head, []byte("big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("Reinit ran under an open batch (store now %s); the batch committed head %s; Get(big) = %d bytes, %v (want %d bytes)", s.Hash(), head, len(got), err, len(big))
	}
	if err := nodeReadable(s, head); err != nil {
		t.Errorf("head's node as stored: %v", err)
	}
	if _, err := s.Verify(ctx, head); err != nil {
		t.Fatalf("Reinit ran under an open batch; head does not verify: %v", err)
	}
}

// TestRedTeamHashWrongAlgLookupsHold: addresses of the other algorithm,
// the zero Hash, and an address whose bytes extend a stored one's never
// name anything in a store (no panic, no false "held"). Held.
func TestRedTeamHashWrongAlgLookupsHold(t *testing.T) {
	ctx := context.Background()
	for _, alg := range node.Algs {
		t.Run(alg.String(), func(t *testing.T) {
			s := openTestHash(t, smallConfig, alg)
			var edits []Edit
			for i := 0; i < 40; i++ {
				edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%03d", i)), Value: []byte("v")})
			}
			edits = append(edits, Edit{Key: []byte("zbig"), Value: bytes.Repeat([]byte("xyz"), 3000)})
			root, err := s.Update(ctx, "head", edits)
			if err != nil {
				t.Fatal(err)
			}
			rn, err := s.Node(ctx, root)
			if err != nil {
				t.Fatal(err)
			}
			val, err := s.GetValue(ctx, root, []byte("zbig"))
			if err != nil || !val.IsRef {
				t.Fatalf("zbig: %+v %v", val, err)
			}
			o := otherAlg(alg)
			var padded [node.MaxHashSize]byte
			copy(padded[:], root.Bytes())
			ext, _ := node.BLAKE3.HashOf(padded[:]) // the xxh3 root's 16 bytes, zero-extended
			trunc, _ := node.XXH3.HashOf(root.Bytes()[:16])
			bad := []node.Hash{
				{},
				node.EmptyRoot(o),
				o.Sum(rn.Raw()),
				o.Sum(nil),
				ext,
				trunc,
				func() node.Hash { h, _ := o.HashOf(append(val.Ref.Bytes(), make([]byte, 32)...)[:o.Size()]); return h }(),
			}
			for _, h := range bad {
				if h == root || h == val.Ref || h == s.EmptyRoot() {
					continue // the same address (the store's own width)
				}
				if ok, err := s.HasNode(h); ok || err != nil {
					t.Errorf("HasNode(%s) = %v, %v", h, ok, err)
				}
				if held, err := s.HasNodes([]node.Hash{h, root}); err != nil || held[0] || !held[1] {
					t.Errorf("HasNodes(%s, root) = %v, %v", h, held, err)
				}
				if _, err := s.Node(ctx, h); !errors.Is(err, node.ErrNotFound) {
					t.Errorf("Node(%s): %v, want ErrNotFound", h, err)
				}
				if _, err := s.Nodes(ctx, []node.Hash{root, h}); !errors.Is(err, node.ErrNotFound) {
					t.Errorf("Nodes(root, %s): %v, want ErrNotFound", h, err)
				}
				if ok, err := s.HasBlob(h); ok || err != nil {
					t.Errorf("HasBlob(%s) = %v, %v", h, ok, err)
				}
				if _, err := s.Blob(ctx, h); err == nil {
					t.Errorf("Blob(%s) served", h)
				}
				if _, err := s.Count(ctx, h); err == nil {
					t.Errorf("Count(%s) succeeded", h)
				}
				if _, err := s.Verify(ctx, h); err == nil {
					t.Errorf("Verify(%s) succeeded", h)
				}
				if _, err := s.ReadValue(ctx, node.RefValue(h, 5000)); err == nil {
					t.Errorf("ReadValue(ref %s) succeeded", h)
				}
				// GC given a foreign extra root keeps the store's trees.
				if _, err := s.GC(ctx, h); err == nil {
					if _, err := s.Verify(ctx, root); err != nil {
						t.Errorf("GC with extra root %s damaged head: %v", h, err)
					}
				}
			}
		})
	}
}

// TestRedTeamHashRelabelledNodeRefused: a leaf of one algorithm with byte
// 0 changed to the other's is a well-formed node of that other algorithm
// when it holds only inline values (no address inside). PutNode,
// PutDecoded and PutDecodedNear must refuse it in a store of the first
// algorithm. Held.
func TestRedTeamHashRelabelledNodeRefused(t *testing.T) {
	for _, alg := range node.Algs {
		t.Run(alg.String(), func(t *testing.T) {
			s := openTestHash(t, smallConfig, alg)
			o := otherAlg(alg)
			leaf := node.Encode(alg, 0, []node.Entry{{Key: []byte("k"), Payload: node.InlineValue([]byte("v")).AppendPayload(nil)}})
			relabelled := append([]byte{byte(o)}, leaf[1:]...)
			n, err := node.Decode(relabelled)
			if err != nil {
				t.Fatalf("relabelled leaf does not decode: %v", err)
			}
			b, err := s.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Discard()
			if _, err := b.PutNode(relabelled); err == nil {
				t.Error("PutNode took a relabelled node")
			}
			if _, err := b.PutDecoded(n); err == nil {
				t.Error("PutDecoded took a relabelled node")
			}
			if _, err := b.PutDecodedNear(n, s.EmptyRoot()); err == nil {
				t.Error("PutDecodedNear took a relabelled node")
			}
			// A value index of the other algorithm does not decode as one of this.
			idx := node.EncodeValueIndex(o, []node.Chunk{{Hash: o.Sum([]byte("c")), Size: 4000}})
			if _, _, err := node.DecodeValueIndex(alg, idx); err == nil {
				t.Error("a value index of the other algorithm decoded")
			}
		})
	}
}

// TestRedTeamHashBLAKE3GCDeltasSettle: deltas, GC, settle and verify on a
// blake3 store keep every retained tree readable. Held.
func TestRedTeamHashBLAKE3GCDeltasSettle(t *testing.T) {
	ctx := context.Background()
	s := openTestHash(t, smallConfig, node.BLAKE3)
	var edits []Edit
	for i := 0; i < 300; i++ {
		edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%04d", i)), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	edits = append(edits, Edit{Key: []byte("k0150x"), Value: bytes.Repeat([]byte("big"), 4000)})
	r1, err := s.Update(ctx, "head", edits)
	if err != nil {
		t.Fatal(err)
	}
	var last node.Hash
	for round := 0; round < 20; round++ {
		last, err = s.Update(ctx, "head", []Edit{{Key: []byte(fmt.Sprintf("k%04d", round*13)), Value: []byte(fmt.Sprintf("r%d", round))}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GC(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []node.Hash{r1, last} {
		if _, err := s.Verify(ctx, r); err != nil {
			t.Fatalf("verify %s after GC: %v", r, err)
		}
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, last); err != nil {
		t.Fatalf("verify head after second GC: %v", err)
	}
	if v, err := s.Get(ctx, last, []byte("k0150x")); err != nil || len(v) != 12000 {
		t.Fatalf("big value after GC: %d bytes, %v", len(v), err)
	}
}
