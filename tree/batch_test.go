package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
)

// setSpill lowers spillBytes for one test.
func setSpill(t *testing.T, n int) {
	old := spillBytes
	spillBytes = n
	t.Cleanup(func() { spillBytes = old })
}

// TestBatchSpillKeepsMetaAtomic is a regression test: SetMeta used to write
// into the Pebble batch at once, so a batch that spilled its nodes ahead of
// the commit also wrote its metadata, and a discarded or failed batch left
// the metadata behind.
func TestBatchSpillKeepsMetaAtomic(t *testing.T) {
	ctx := context.Background()
	setSpill(t, 16<<10)
	s := openTest(t, smallConfig)
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta("cursor", []byte("42")); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteMeta("never-set"); err != nil {
		t.Fatal(err)
	}
	// A 200 KiB value is stored as blobs well past the spill threshold.
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	root, err := b.Apply(ctx, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("big"), Value: big}})
	if err != nil {
		t.Fatal(err)
	}
	b.Discard()
	if v, err := s.Meta("cursor"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Discard, Meta = %q, %v; want ErrNotFound", v, err)
	}

	// The same batch committed makes the metadata and the tree visible together.
	b, _ = s.NewBatch()
	b.SetMeta("cursor", []byte("42"))
	b.SetMeta("empty", nil)
	root2, err := b.Apply(ctx, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("big"), Value: big}})
	if err != nil || root2 != root {
		t.Fatalf("Apply = %s, %v; want %s", root2, err, root)
	}
	b.SetRef("head", root2)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Meta("cursor"); err != nil || string(v) != "42" {
		t.Fatalf("Meta(cursor) = %q, %v", v, err)
	}
	if v, err := s.Meta("empty"); err != nil || len(v) != 0 {
		t.Fatalf("Meta(empty) = %q, %v", v, err)
	}
	checkContents(t, s, root2, map[string]string{"big": string(big)})

	// A batch whose ref expectation fails writes no metadata either.
	b, _ = s.NewBatch()
	b.SetMeta("cursor", []byte("43"))
	if _, err := b.Apply(ctx, root2, []Edit{{Key: []byte("big2"), Value: big}}); err != nil {
		t.Fatal(err)
	}
	b.ExpectRef("head", node.EmptyRoot(node.XXH3), true)
	if err := b.Commit(ctx); !errors.Is(err, ErrRefMoved) {
		t.Fatalf("Commit = %v, want ErrRefMoved", err)
	}
	if v, _ := s.Meta("cursor"); string(v) != "42" {
		t.Fatalf("failed commit changed Meta(cursor) to %q", v)
	}
	b, _ = s.NewBatch()
	b.DeleteMeta("cursor")
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Meta("cursor"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after DeleteMeta, Meta error = %v", err)
	}
}

// TestGCInvalidatesNodeCache: a node read from Pebble just before garbage
// collection deleted it must not enter the cache afterwards (a reader
// without the GC lock, such as Store.Node, can race with the sweep), and a
// batch that recreates a collected node must write it again rather than
// trust a stale cache entry.
func TestGCInvalidatesNodeCache(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	model := map[string]string{}
	for i := 0; i < 300; i++ {
		model[fmt.Sprintf("k%04d", i)] = fmt.Sprint(i)
	}
	old := build(t, s, model)
	var edits []Edit
	for k := range model {
		edits = append(edits, Edit{Key: []byte(k), Value: []byte("new")})
	}
	b, _ := s.NewBatch()
	head, err := b.Apply(ctx, old, edits)
	if err != nil {
		t.Fatal(err)
	}
	b.SetRef("head", head)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// A reader notes the cache generation and reads the old root...
	gen := s.cache.generation()
	n, err := s.Node(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	// ...and adds it only after the collection deleted it.
	s.cache.addIfGen(old, cached{n: n}, gen)
	if ok, err := s.HasNode(old); err != nil || ok {
		t.Fatalf("HasNode(collected root) = %v, %v; want false", ok, err)
	}
	if _, err := s.Node(ctx, old); !errors.Is(err, node.ErrNotFound) {
		t.Fatalf("Node(collected root) error = %v, want ErrNotFound", err)
	}

	// Going back to the old records rewrites the collected nodes.
	for i := range edits {
		edits[i].Value = []byte(model[string(edits[i].Key)])
	}
	root, err := s.Update(ctx, "head", edits)
	if err != nil {
		t.Fatal(err)
	}
	if root != old {
		t.Fatalf("root %s, want the old root %s", root, old)
	}
	checkContents(t, s, root, model)
}

// TestConcurrentUpdatesAndGC runs writers that update one ref concurrently
// (retrying on ErrRefMoved) while garbage collection runs in a loop. Update
// used to read the ref before starting its batch, so a collection in
// between could delete the root it was about to edit (after another writer
// moved the ref) and Update failed with ErrNotFound instead of retrying.
func TestConcurrentUpdatesAndGC(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	const writers, rounds, perRound = 4, 12, 40
	errs := make(chan error, writers+1)
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.GC(ctx); err != nil {
				errs <- fmt.Errorf("gc: %w", err)
				return
			}
		}
	}()
	model := map[string]string{}
	done := make(chan struct{})
	for w := 0; w < writers; w++ {
		for r := 0; r < rounds; r++ {
			for i := 0; i < perRound; i++ {
				model[fmt.Sprintf("w%d-%04d", w, r*perRound+i)] = fmt.Sprintf("%d/%d", w, r)
			}
		}
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for r := 0; r < rounds; r++ {
				edits := make([]Edit, perRound)
				for i := range edits {
					edits[i] = Edit{Key: []byte(fmt.Sprintf("w%d-%04d", w, r*perRound+i)), Value: []byte(fmt.Sprintf("%d/%d", w, r))}
				}
				if _, err := s.Update(ctx, "head", edits); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, r, err)
					return
				}
			}
		}(w)
	}
	for w := 0; w < writers; w++ {
		<-done
	}
	close(stop)
	<-gcDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	head, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, s, head, model)
}

// TestStoredValuesAreValidated is a regression test: Builder.AddValue
// accepted any key and stored value, and ApplyValues any reference, so a
// caller could write a node that Decode rejects, making the tree
// unreadable. Both now refuse such input.
func TestStoredValuesAreValidated(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	ref := node.XXH3.Sum([]byte("index"))
	bad := []struct {
		name string
		key  []byte
		v    node.Value
		want error
	}{
		{"empty key", nil, node.InlineValue([]byte("v")), ErrKeyTooLarge},
		{"huge key", bytes.Repeat([]byte{'k'}, node.MaxKeySize+1), node.InlineValue(nil), ErrKeyTooLarge},
		{"inline too large", []byte("k"), node.InlineValue(make([]byte, node.MaxInlineValue+1)), ErrValueTooLarge},
		{"reference to a small value", []byte("k"), node.RefValue(ref, node.MaxInlineValue), node.ErrCorrupt},
		{"reference to a huge value", []byte("k"), node.RefValue(ref, node.MaxValueSize+1), ErrValueTooLarge},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			b, err := s.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Discard()
			bl := b.NewBuilder(ctx)
			if err := bl.AddValue(tc.key, tc.v); !errors.Is(err, tc.want) {
				t.Fatalf("AddValue error = %v, want %v", err, tc.want)
			}
			v := tc.v
			if _, err := b.ApplyValues(ctx, node.EmptyRoot(node.XXH3), []StoredEdit{{Key: tc.key, Value: &v}}); !errors.Is(err, tc.want) {
				t.Fatalf("ApplyValues error = %v, want %v", err, tc.want)
			}
		})
	}
	// Well-formed stored values still go in, and read back.
	b, _ := s.NewBatch()
	bl := b.NewBuilder(ctx)
	if err := bl.AddValue([]byte("a"), node.InlineValue([]byte("1"))); err != nil {
		t.Fatal(err)
	}
	if err := bl.AddValue([]byte("b"), node.RefValue(ref, node.MaxInlineValue+1)); err != nil {
		t.Fatal(err)
	}
	root, err := bl.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetValue(ctx, root, []byte("b")); err != nil || !v.Equal(node.RefValue(ref, node.MaxInlineValue+1)) {
		t.Fatalf("GetValue(b) = %+v, %v", v, err)
	}
}

// TestBuilderIngestSpills builds a tree whose Builder batch spills many
// times by sstable ingestion, and checks that the tree is the one Apply
// builds, that it verifies after a reopen, that no ingest file is left
// behind, and that a discarded bulk load leaves only collectable garbage.
func TestBuilderIngestSpills(t *testing.T) {
	ctx := context.Background()
	old := ingestSpillBytes
	ingestSpillBytes = 16 << 10
	t.Cleanup(func() { ingestSpillBytes = old })
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig})
	if err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	for i := 0; i < 4000; i++ {
		v := fmt.Sprintf("value-%d", i)
		if i%500 == 0 {
			v = string(bytes.Repeat([]byte{byte(i)}, 3000+i)) // out of line: blobs spill too
		}
		model[fmt.Sprintf("k%05d", i)] = v
	}
	root := build(t, s, model)
	if n := s.db.Metrics().Ingest.Count; n < 5 {
		t.Fatalf("the bulk load ingested %d sstables, want several", n)
	}
	var edits []Edit
	for k, v := range model {
		edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
	}
	if applied := apply(t, s, node.EmptyRoot(node.XXH3), edits); applied != root {
		t.Fatalf("built root %s, applied root %s", root, applied)
	}
	b, _ := s.NewBatch()
	b.SetRef("head", root)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A bulk load that spills and is then discarded.
	b, _ = s.NewBatch()
	bl := b.NewBuilder(ctx)
	for i := 0; i < 3000; i++ {
		if err := bl.Add([]byte(fmt.Sprintf("other%05d", i)), []byte(fmt.Sprintf("x%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bl.Finish(); err != nil {
		t.Fatal(err)
	}
	b.Discard()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ingestPrefix) {
			t.Fatalf("ingest file %s left in the store", e.Name())
		}
	}
	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkContents(t, s, root, model)
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeletedNodes == 0 {
		t.Fatalf("GC found no garbage from the discarded bulk load: %+v", st)
	}
	checkContents(t, s, root, model)
}

// TestRefsChanged checks the ref-move broadcast: a commit that moves a ref
// closes the channel taken before it, one that moves none does not, and
// Close wakes every follower.
func TestRefsChanged(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}
	ch := s.RefsChanged()
	if closed(ch) {
		t.Fatal("channel closed before any commit")
	}
	b, _ := s.NewBatch()
	if err := b.SetMeta("x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if closed(ch) {
		t.Fatal("a commit that moved no ref closed the channel")
	}
	if _, err := s.Update(ctx, "head", []Edit{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Fatal("moving head did not close the channel")
	}
	next := s.RefsChanged()
	if next == ch || closed(next) {
		t.Fatal("after a move, RefsChanged must return a fresh, open channel")
	}
	s.Close()
	if !closed(next) {
		t.Fatal("Close did not wake followers")
	}
}

// TestHasNodesMatchesHasNode checks the batched lookup against the single
// one on stored, cached, absent and empty-root hashes.
func TestHasNodesMatchesHasNode(t *testing.T) {
	s := openTest(t, smallConfig)
	var edits []Edit
	for i := 0; i < 300; i++ {
		edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%04d", i)), Value: []byte("v")})
	}
	root := apply(t, s, node.EmptyRoot(node.XXH3), edits)
	hs := []node.Hash{node.EmptyRoot(node.XXH3), root, node.XXH3.Sum([]byte("absent")), {}}
	n, err := s.Node(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n.Len(); i++ {
		c, _ := n.Child(i)
		hs = append(hs, c, node.XXH3.Sum(c.Bytes()))
	}
	s.cache.invalidate() // make the lookups go to Pebble
	got, err := s.HasNodes(hs)
	if err != nil {
		t.Fatal(err)
	}
	present := 0
	for i, h := range hs {
		want, err := s.HasNode(h)
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != want {
			t.Errorf("HasNodes[%d] (%s) = %v, HasNode = %v", i, h.Short(), got[i], want)
		}
		if want {
			present++
		}
	}
	if present < 3 || present == len(hs) {
		t.Fatalf("%d of %d hashes present: the test needs both kinds", present, len(hs))
	}
}

// TestHasNodesEmptyAndDeltaStores: a store with no node holds none of the
// hashes asked about (and HoldsNodes says so), and a node stored only as a
// delta is found.
func TestHasNodesEmptyAndDeltaStores(t *testing.T) {
	s := openTest(t, smallConfig)
	absent := node.XXH3.Sum([]byte("absent"))
	got, err := s.HasNodes([]node.Hash{node.EmptyRoot(node.XXH3), absent})
	if err != nil || !got[0] || got[1] {
		t.Fatalf("empty store: HasNodes = %v, %v; want [true false]", got, err)
	}
	if holds, err := s.HoldsNodes(); err != nil || holds {
		t.Fatalf("empty store: HoldsNodes = %v, %v", holds, err)
	}
	var keys []Edit
	for i := 0; i < 20; i++ {
		keys = append(keys, Edit{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte("v")})
	}
	b := apply(t, s, node.EmptyRoot(node.XXH3), keys)                           // a leaf, whole
	x := apply(t, s, b, []Edit{{Key: []byte("k05"), Value: []byte("changed")}}) // a delta of it
	if ok, _ := s.has(nodeKey(x)); ok {
		t.Fatal("the edited leaf was stored whole: the test no longer covers deltas")
	}
	s.cache.invalidate()
	if holds, err := s.HoldsNodes(); err != nil || !holds {
		t.Fatalf("HoldsNodes = %v, %v after storing a tree", holds, err)
	}
	got, err = s.HasNodes([]node.Hash{x, absent, b})
	if err != nil || !got[0] || got[1] || !got[2] {
		t.Fatalf("HasNodes = %v, %v; want [true false true]", got, err)
	}
}

// TestNodesMatchesNode: Nodes, which reads what the cache misses with one
// iterator in key order, returns what Node returns for each hash, in the
// order asked, for nodes stored whole and as deltas, cached or not, and
// fails with ErrNotFound naming a missing one.
func TestNodesMatchesNode(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, smallConfig)
	var edits []Edit
	for i := range 400 {
		edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%04d", i)), Value: []byte("v")})
	}
	r0 := apply(t, s, s.EmptyRoot(), edits)
	r1 := apply(t, s, r0, []Edit{{Key: []byte("k0005"), Value: []byte("changed")}, {Key: []byte("k0300"), Delete: true}})
	var hs []node.Hash
	for _, root := range []node.Hash{r1, r0} {
		stack := []node.Hash{root}
		for len(stack) > 0 {
			h := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			hs = append(hs, h)
			n, err := s.Node(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; !n.IsLeaf() && i < n.Len(); i++ {
				c, _ := n.Child(i)
				stack = append(stack, c)
			}
		}
	}
	hs = append(hs, s.EmptyRoot(), hs[3]) // the empty root and a repeat
	var deltas int
	for _, h := range hs {
		if ok, _ := s.has(deltaKey(h)); ok {
			deltas++
		}
	}
	if deltas == 0 {
		t.Fatal("no node stored as a delta: the test no longer covers them")
	}
	for _, warm := range []bool{false, true} {
		s.cache.invalidate()
		if warm {
			for _, h := range hs[:len(hs)/2] {
				s.Node(ctx, h)
			}
		}
		got, err := s.Nodes(ctx, hs)
		if err != nil {
			t.Fatalf("Nodes (warm %v): %v", warm, err)
		}
		for i, h := range hs {
			if got[i] == nil || got[i].Hash() != h {
				t.Fatalf("Nodes (warm %v)[%d] is not node %s", warm, i, h)
			}
		}
	}
	absent := node.XXH3.Sum([]byte("absent"))
	s.cache.invalidate()
	if _, err := s.Nodes(ctx, []node.Hash{hs[0], absent, hs[1]}); !errors.Is(err, node.ErrNotFound) || !strings.Contains(err.Error(), absent.String()) {
		t.Fatalf("Nodes with a missing hash: %v", err)
	}
}
