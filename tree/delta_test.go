package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// randLeaf returns a leaf of up to n entries drawn from a small key space.
func randLeaf(r *rand.Rand, n int) *node.Node {
	var ents []node.Entry
	for k := 0; k < 3*n && len(ents) < n; k++ {
		if r.IntN(3) == 0 {
			continue
		}
		v := node.InlineValue([]byte(fmt.Sprintf("v%d", r.IntN(4))))
		ents = append(ents, node.Entry{Key: []byte(fmt.Sprintf("k%03d", k)), Payload: v.AppendPayload(nil)})
	}
	return node.Build(node.XXH3, 0, ents)
}

// TestDeltaOpsRoundTrip checks the delta algebra on random leaves: the ops
// from a to b turn a into b through the stored encoding, and composing the
// ops a→b and b→c gives ops a→c.
func TestDeltaOpsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 500; i++ {
		a, b, c := randLeaf(r, 1+r.IntN(20)), randLeaf(r, r.IntN(20)), randLeaf(r, r.IntN(20))
		ab, ok := diffOps(nil, a, b, 1<<20)
		if !ok {
			t.Fatal("diffOps refused an unbounded limit")
		}
		bc, _ := diffOps(nil, b, c, 1<<20)
		base := a.Hash()
		for _, tc := range []struct {
			ops  []deltaOp
			want *node.Node
		}{{ab, b}, {composeOps(nil, ab, bc), c}} {
			enc := appendDelta(nil, 0, base, tc.ops)
			if got := deltaHeader(node.XXH3) + uvarintLen(uint64(len(tc.ops))); len(tc.ops) == 0 && len(enc) != got {
				t.Fatalf("empty delta is %d bytes, want %d", len(enc), got)
			}
			d, err := decodeDelta(node.XXH3, enc)
			if err != nil {
				t.Fatalf("decode own delta: %v", err)
			}
			if d.base != base || d.level != 0 || len(d.ops) != len(tc.ops) {
				t.Fatalf("decoded delta %+v differs from the encoded one", d)
			}
			raw, err := applyDelta(a, d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, tc.want.Raw()) {
				t.Fatalf("applying the delta gives %x, want %x", raw, tc.want.Raw())
			}
		}
		if ops, ok := diffOps(nil, a, b, 0); ok && len(ops) > 0 {
			t.Fatalf("diffOps kept %d ops under a zero limit", len(ops))
		}
	}
}

func TestDecodeDeltaErrors(t *testing.T) {
	base := node.XXH3.Sum([]byte("base"))
	good := appendDelta(nil, 0, base, []deltaOp{{key: []byte("a"), payload: []byte{0, 'x'}}, {key: []byte("b")}})
	cases := map[string][]byte{
		"empty":           nil,
		"untagged":        append([]byte{byte(node.XXH3)}, good[1:]...),
		"short":           good[:deltaHeader(node.XXH3)],
		"level":           append([]byte{deltaTag, node.MaxLevel + 1}, good[2:]...),
		"truncated":       good[:len(good)-1],
		"trailing":        append(bytes.Clone(good), 0),
		"count too large": append(bytes.Clone(good[:deltaHeader(node.XXH3)]), 0x7f),
		"keys unordered":  appendDelta(nil, 0, base, []deltaOp{{key: []byte("b")}, {key: []byte("a")}}),
		"duplicate keys":  appendDelta(nil, 0, base, []deltaOp{{key: []byte("a")}, {key: []byte("a")}}),
		"key too long":    appendDelta(nil, 0, base, []deltaOp{{key: bytes.Repeat([]byte("k"), node.MaxKeySize+1)}}),
	}
	for name, raw := range cases {
		if _, err := decodeDelta(node.XXH3, raw); !errors.Is(err, node.ErrCorrupt) {
			t.Errorf("%s: error %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := decodeDelta(node.XXH3, good); err != nil {
		t.Fatalf("good delta: %v", err)
	}
}

// FuzzDecodeDelta feeds arbitrary bytes to the delta decoder and applies
// what it accepts to a fixed base: neither may panic, errors wrap
// ErrCorrupt, and an accepted delta re-encodes to a delta that decodes the
// same.
func FuzzDecodeDelta(f *testing.F) {
	base := node.Build(node.XXH3, 0, []node.Entry{
		{Key: []byte("a"), Payload: node.InlineValue([]byte("1")).AppendPayload(nil)},
		{Key: []byte("c"), Payload: node.InlineValue([]byte("3")).AppendPayload(nil)},
	})
	f.Add(appendDelta(nil, 0, base.Hash(), []deltaOp{{key: []byte("b"), payload: []byte{0, '2'}}, {key: []byte("c")}}))
	f.Add(appendDelta(nil, 1, base.Hash(), nil))
	f.Add([]byte{deltaTag})
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := decodeDelta(node.XXH3, raw)
		if err != nil {
			if !errors.Is(err, node.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeDelta(node.XXH3, appendDelta(nil, d.level, d.base, d.ops))
		if err != nil || again.base != d.base || again.level != d.level || len(again.ops) != len(d.ops) {
			t.Fatalf("re-encoded delta decodes to %+v, %v; want %+v", again, err, d)
		}
		if out, err := applyDelta(base, d); err == nil {
			// The result may be any bytes; decoding them must not panic.
			node.Decode(out)
		} else if !errors.Is(err, node.ErrCorrupt) {
			t.Fatalf("apply error %v does not wrap ErrCorrupt", err)
		}
	})
}

// eachStoredNode calls fn with every stored node record's hash and stored
// bytes (valid during the call), deltas first, until fn returns false. A
// whole node is never stored under the delta prefix, nor a delta under the
// node prefix.
func eachStoredNode(t *testing.T, s *Store, fn func(h node.Hash, stored []byte) bool) {
	t.Helper()
	for _, p := range []byte{prefixDelta, prefixNode} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			if isDelta(it.Value()) != (p == prefixDelta) {
				it.Close()
				t.Fatalf("node %x: stored form does not match its key prefix", it.Key())
			}
			if !fn(xxHash(it.Key()[1:]), it.Value()) {
				it.Close()
				return
			}
		}
		it.Close()
	}
}

// storedForms counts the store's nodes kept whole and as deltas, and
// checks that every delta's base is stored whole.
func storedForms(t *testing.T, s *Store) (whole, deltas int) {
	t.Helper()
	eachStoredNode(t, s, func(h node.Hash, v []byte) bool {
		if !isDelta(v) {
			whole++
			return true
		}
		deltas++
		d, err := decodeDelta(node.XXH3, v)
		if err != nil {
			t.Fatalf("stored delta %s: %v", h, err)
		}
		b, err := s.get(nodeKey(d.base))
		if err != nil {
			t.Fatalf("delta %s: base %s: %v", h, d.base, err)
		}
		if isDelta(b) {
			t.Fatalf("delta %s: base %s is itself a delta", h, d.base)
		}
		return true
	})
	return whole, deltas
}

// TestUpdatesStoreDeltas makes scattered small updates, as a busy replica
// does, and checks that they are stored as deltas, that the tree reads
// back exactly (from a cold cache too, after reopening) and verifies, and
// that garbage collection leaves no delta without its base.
func TestUpdatesStoreDeltas(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	model := map[string]string{}
	for i := 0; i < 3000; i++ {
		model[fmt.Sprintf("key%05d", i)] = fmt.Sprintf("value-%d-0", i)
	}
	root := build(t, s, model)
	var roots []node.Hash
	for round := 1; round <= 30; round++ {
		var edits []Edit
		for j := 0; j < 20; j++ {
			k := fmt.Sprintf("key%05d", r.IntN(3200))
			switch r.IntN(10) {
			case 0:
				delete(model, k)
				edits = append(edits, Edit{Key: []byte(k), Delete: true})
			default:
				v := fmt.Sprintf("value-%s-%d", k, round)
				model[k] = v
				edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
			}
		}
		root = apply(t, s, root, edits)
		roots = append(roots, root)
	}
	if root != build(t, openTest(t, s.Config()), model) {
		t.Fatal("root after delta-stored updates differs from a bulk build")
	}
	whole, deltas := storedForms(t, s)
	if deltas == 0 {
		t.Fatalf("no node stored as a delta (%d whole)", whole)
	}
	t.Logf("%d nodes whole, %d as deltas", whole, deltas)
	checkContents(t, s, root, model)

	// Cold: reopen, so every read rebuilds deltas from disk.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, &Options{NoSync: true, CacheSize: -1}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkContents(t, s, root, model)

	// Keep a middle root, drop the rest: GC must keep both trees whole.
	mid := roots[len(roots)/2]
	b, _ := s.NewBatch()
	b.SetRef("head", root)
	b.SetRef("mid", mid)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeletedNodes == 0 {
		t.Fatal("GC deleted nothing after 30 rounds of updates")
	}
	storedForms(t, s) // every remaining delta has its base
	checkContents(t, s, root, model)
	for _, h := range []node.Hash{root, mid} {
		if rep, err := s.Verify(ctx, h); err != nil {
			t.Fatalf("Verify(%s) after GC: %v (%+v)", h, err, rep)
		}
	}
}

// deltaStore builds model, applies edits (with the node cache, which is
// where Apply finds the nodes it writes deltas of) and reopens the store
// without a cache, so that every read goes to disk.
func deltaStore(t *testing.T, model map[string]string, edits []Edit) (*Store, node.Hash) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	root := apply(t, s, build(t, s, model), edits)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, &Options{NoSync: true, CacheSize: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

// deltaNode returns a node stored as a delta in s, and its delta.
func deltaNode(t *testing.T, s *Store) (h node.Hash, d delta) {
	t.Helper()
	found := false
	eachStoredNode(t, s, func(nh node.Hash, v []byte) bool {
		if !isDelta(v) {
			return true
		}
		var err error
		if d, err = decodeDelta(node.XXH3, bytes.Clone(v)); err != nil {
			t.Fatal(err)
		}
		h, found = nh, true
		return false
	})
	if !found {
		t.Fatal("no delta stored")
	}
	return h, d
}

// TestDamagedDeltas checks that a delta whose ops were altered, or whose
// base is gone, reads as an error (never wrong data) and fails Verify.
func TestDamagedDeltas(t *testing.T) {
	ctx := context.Background()
	for _, damage := range []string{"ops", "base"} {
		t.Run(damage, func(t *testing.T) {
			model := map[string]string{}
			for i := 0; i < 500; i++ {
				model[fmt.Sprintf("key%04d", i)] = strings.Repeat("v", 20)
			}
			s, root := deltaStore(t, model, []Edit{{Key: []byte("key0100"), Value: []byte("changed")}})
			h, d := deltaNode(t, s)
			want := node.ErrCorrupt
			switch damage {
			case "ops":
				d.ops[0].payload = node.InlineValue([]byte("forged")).AppendPayload(nil)
				if err := s.db.Set(deltaKey(h), appendDelta(nil, d.level, d.base, d.ops), pebble.Sync); err != nil {
					t.Fatal(err)
				}
			case "base":
				want = node.ErrNotFound
				if err := s.db.Delete(nodeKey(d.base), pebble.Sync); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Node(ctx, h); !errors.Is(err, want) {
				t.Fatalf("Node(damaged delta) error = %v, want %v", err, want)
			}
			if _, err := s.Get(ctx, root, []byte("key0100")); !errors.Is(err, want) {
				t.Fatalf("Get through the damaged delta: error = %v, want %v", err, want)
			}
			rep, err := s.Verify(ctx, root)
			if !errors.Is(err, ErrVerify) || len(rep.Problems) == 0 {
				t.Fatalf("Verify = %+v, %v; want problems", rep, err)
			}
		})
	}
}

// TestDeltaReadAfterGCRewrite covers a reader that read a node's delta just
// before garbage collection rewrote the node whole and deleted its base:
// rebuilding the delta finds no base and must read the node again.
func TestDeltaReadAfterGCRewrite(t *testing.T) {
	ctx := context.Background()
	model := map[string]string{}
	for i := 0; i < 500; i++ {
		model[fmt.Sprintf("key%04d", i)] = "v"
	}
	s, root := deltaStore(t, model, []Edit{{Key: []byte("key0200"), Value: []byte("w")}})
	h, d := deltaNode(t, s)
	stale := appendDelta(nil, d.level, d.base, d.ops)
	n, err := s.Node(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.rewriteWhole(ctx, []node.Hash{h}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Delete(nodeKey(d.base), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	raw, err := s.undelta(ctx, h, stale)
	if err != nil || !bytes.Equal(raw, n.Raw()) {
		t.Fatalf("undelta after the rewrite = %v; want the node's bytes", err)
	}
	model["key0200"] = "w"
	checkContents(t, s, root, model)
}

// TestStoreFormatMarker checks the marker rules: a version-1 store opens
// and is marked version 2, a newer one is refused, a garbled one is not a
// store.
func TestStoreFormatMarker(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	marker := filepath.Join(dir, markerFile)
	write := func(text string) {
		if err := os.WriteFile(marker, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(markerText + "1\n")
	if s, err = Open(dir, nil); err != nil {
		t.Fatalf("open a version-1 store: %v", err)
	}
	s.Close()
	if b, _ := os.ReadFile(marker); string(b) != markerText+"3\n" {
		t.Fatalf("marker after opening a version-1 store = %q", b)
	}
	write(fmt.Sprintf("%s%d\n", markerText, FormatVersion+1))
	if _, err := Open(dir, nil); !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("open a newer store: %v, want ErrNewerFormat", err)
	}
	write("something else\n")
	if _, err := Open(dir, nil); !errors.Is(err, ErrNotStore) {
		t.Fatalf("open with a garbled marker: %v, want ErrNotStore", err)
	}
}

// TestRebuiltBaseStaysWhole: a node that is some delta's base is rebuilt
// (its exact records come back in another tree) while it is no longer in
// the cache. Writing it again, possibly as a delta, must not replace its
// whole form, or the delta that depends on it becomes unreadable.
func TestRebuiltBaseStaysWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys []Edit
	for i := 0; i < 20; i++ {
		keys = append(keys, Edit{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte("v")})
	}
	b := apply(t, s, node.EmptyRoot(node.XXH3), keys)                                                       // leaf B, whole
	x := apply(t, s, b, []Edit{{Key: []byte("k05"), Value: []byte("changed")}})                             // X, a delta of B
	d := apply(t, s, node.EmptyRoot(node.XXH3), append(keys, Edit{Key: []byte("k99"), Value: []byte("v")})) // D
	b2 := apply(t, s, d, []Edit{{Key: []byte("k99"), Delete: true}})                                        // B again, near D
	if b2 != b {
		t.Fatalf("rebuilding B's records gave %s, want %s", b2, b)
	}
	if ok, err := s.has(deltaKey(b)); err != nil || !ok {
		t.Fatalf("the rebuilt B was not written as a delta (%v, %v): the test no longer covers the case", ok, err)
	}
	bt, _ := s.NewBatch()
	bt.SetRef("x", x)
	bt.SetRef("b", b2)
	bt.SetRef("d", d)
	if err := bt.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, &Options{NoSync: true, CacheSize: -1}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storedForms(t, s) // every delta's base is stored whole
	for _, r := range []node.Hash{x, b, d} {
		if _, err := s.Verify(ctx, r); err != nil {
			t.Fatalf("Verify(%s): %v", r.Short(), err)
		}
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatalf("GC: %v", err)
	}
	storedForms(t, s)
	for _, r := range []node.Hash{x, b, d} {
		if _, err := s.Verify(ctx, r); err != nil {
			t.Fatalf("Verify(%s) after GC: %v", r.Short(), err)
		}
	}
}
