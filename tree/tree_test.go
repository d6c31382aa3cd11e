package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
)

// smallConfig makes small nodes so that modest tests build deep trees.
var smallConfig = chunker.Config{LeafFanout: 4, BranchFanout: 4}

func openTest(t testing.TB, cfg chunker.Config) *Store { return openTestHash(t, cfg, 0) }

func openTestHash(t testing.TB, cfg chunker.Config, alg node.Alg) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), &Options{Chunker: cfg, NoSync: true, Hash: alg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func apply(t testing.TB, s *Store, root node.Hash, edits []Edit) node.Hash {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Apply(context.Background(), root, edits)
	if err != nil {
		b.Discard()
		t.Fatal(err)
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func build(t testing.TB, s *Store, model map[string]string) node.Hash {
	t.Helper()
	r, err := buildModel(context.Background(), s, model, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// buildModel bulk-builds model's records with a Builder in one batch and
// commits it, moving ref (unless empty) to the new root in the same commit.
func buildModel(ctx context.Context, s *Store, model map[string]string, ref string) (node.Hash, error) {
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b, err := s.NewBatch()
	if err != nil {
		return node.Hash{}, err
	}
	bl := b.NewBuilder(ctx)
	for _, k := range keys {
		if err := bl.Add([]byte(k), []byte(model[k])); err != nil {
			b.Discard()
			return node.Hash{}, err
		}
	}
	r, err := bl.Finish()
	if err != nil {
		b.Discard()
		return node.Hash{}, err
	}
	if ref != "" {
		b.SetRef(ref, r)
	}
	return r, b.Commit(ctx)
}

// checkContents asserts that the tree at root holds exactly model.
func checkContents(t testing.TB, s *Store, root node.Hash, model map[string]string) {
	t.Helper()
	ctx := context.Background()
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	it := s.NewIterator(ctx, root, Range{})
	i := 0
	for it.Next() {
		if i >= len(keys) {
			t.Fatalf("iterator yields extra key %q", it.Key())
		}
		if string(it.Key()) != keys[i] {
			t.Fatalf("iterator key %d = %q, want %q", i, it.Key(), keys[i])
		}
		v, err := s.ReadValue(ctx, it.Value())
		if err != nil {
			t.Fatal(err)
		}
		if string(v) != model[keys[i]] {
			t.Fatalf("iterator value of %q differs", keys[i])
		}
		i++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if i != len(keys) {
		t.Fatalf("iterator yields %d keys, want %d", i, len(keys))
	}
	n, err := s.Count(ctx, root)
	if err != nil || n != uint64(len(model)) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(model))
	}
	for k, v := range model {
		got, err := s.Get(ctx, root, []byte(k))
		if err != nil || string(got) != v {
			t.Fatalf("Get(%q) = %q, %v", k, got, err)
		}
	}
	if _, err := s.Get(ctx, root, []byte("\xff\xffmissing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) error = %v, want ErrNotFound", err)
	}
	if rep, err := s.Verify(ctx, root); err != nil {
		t.Fatalf("Verify: %v (%+v)", err, rep)
	}
}

func randKey(r *rand.Rand, space int) string { return fmt.Sprintf("k%06d", r.IntN(space)) }

func randValue(r *rand.Rand) string {
	switch r.IntN(20) {
	case 0:
		return string(bytes.Repeat([]byte{byte('a' + r.IntN(26))}, node.MaxInlineValue+1+r.IntN(40000)))
	default:
		return fmt.Sprintf("v%d", r.Uint32())
	}
}

// TestApplyMatchesModelAndBuild applies random batches of puts and deletes
// and checks after each batch that the tree holds the model's records and
// that its root equals a bulk build of the same records (history independence).
func TestApplyMatchesModelAndBuild(t *testing.T) {
	for _, alg := range node.Algs {
		for _, cfg := range []chunker.Config{smallConfig, {}} {
			for seed := uint64(1); seed <= 6; seed++ {
				if alg != node.XXH3 && seed > 3 {
					break
				}
				t.Run(fmt.Sprintf("%s/fanout%d/seed%d", alg, cfg.WithDefaults().LeafFanout, seed), func(t *testing.T) {
					applyMatchesModel(t, alg, cfg, seed)
				})
			}
		}
	}
}

func applyMatchesModel(t *testing.T, alg node.Alg, cfg chunker.Config, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0))
	s := openTestHash(t, cfg, alg)
	model := map[string]string{}
	root := s.EmptyRoot()
	space := 50 + r.IntN(3000)
	for round := 0; round < 12; round++ {
		var edits []Edit
		for n := r.IntN(300) + 1; n > 0; n-- {
			k := randKey(r, space)
			if r.IntN(3) == 0 {
				edits = append(edits, Edit{Key: []byte(k), Delete: true})
				delete(model, k)
			} else {
				v := randValue(r)
				edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
				model[k] = v
			}
		}
		root = apply(t, s, root, edits)
		checkContents(t, s, root, model)
		if want := build(t, s, model); root != want {
			t.Fatalf("round %d: applied root %s != built root %s", round, root, want)
		}
	}
	// Delete everything: back to the empty tree.
	var edits []Edit
	for k := range model {
		edits = append(edits, Edit{Key: []byte(k), Delete: true})
	}
	if _, err := s.Verify(context.Background(), root); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if root = apply(t, s, root, edits); root != s.EmptyRoot() || root.Alg() != alg {
		t.Fatalf("deleting every key gives root %s, want the empty root", root)
	}
}

// TestHistoryIndependence inserts one record set in many orders and
// batchings and expects one root.
func TestHistoryIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	s := openTest(t, smallConfig)
	model := map[string]string{}
	for len(model) < 2000 {
		model[randKey(r, 1_000_000)] = fmt.Sprint(r.IntN(100))
	}
	want := build(t, s, model)
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	for trial := 0; trial < 8; trial++ {
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		root := node.EmptyRoot(node.XXH3)
		// Insert junk first and delete it later, so the history differs more.
		junk := []Edit{{Key: []byte("junk-a"), Value: []byte("x")}, {Key: []byte("k5"), Value: []byte("y")}}
		root = apply(t, s, root, junk)
		for i := 0; i < len(keys); {
			n := 1 + r.IntN(400)
			var edits []Edit
			for ; n > 0 && i < len(keys); n-- {
				edits = append(edits, Edit{Key: []byte(keys[i]), Value: []byte(model[keys[i]])})
				i++
			}
			root = apply(t, s, root, edits)
		}
		root = apply(t, s, root, []Edit{{Key: []byte("junk-a"), Delete: true}, {Key: []byte("k5"), Delete: true}})
		if root != want {
			t.Fatalf("trial %d: root %s, want %s", trial, root, want)
		}
	}
}

// TestGCKeepsRetainedRoots overwrites a tree several times, keeps one old
// root as a ref, collects, and checks that retained trees are intact and
// unretained nodes are gone.
func TestGCKeepsRetainedRoots(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 3))
	s := openTest(t, smallConfig)
	model := map[string]string{}
	var kept node.Hash
	var keptModel map[string]string
	for round := 0; round < 6; round++ {
		var edits []Edit
		for i := 0; i < 200; i++ {
			k, v := randKey(r, 500), randValue(r)
			model[k] = v
			edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
		}
		root, err := s.Update(ctx, "head", edits)
		if err != nil {
			t.Fatal(err)
		}
		if round == 2 {
			kept, keptModel = root, maps(model)
			b, _ := s.NewBatch()
			b.SetRef("snapshot", kept)
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeletedNodes == 0 {
		t.Fatalf("GC deleted nothing after overwrites: %+v", st)
	}
	head, _ := s.Root("head")
	checkContents(t, s, head, model)
	checkContents(t, s, kept, keptModel)
	st2, err := s.GC(ctx)
	if err != nil || st2.DeletedNodes != 0 || st2.DeletedBlobs != 0 {
		t.Fatalf("second GC = %+v, %v; want nothing deleted", st2, err)
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestCountRangeMatchesModel(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 11))
	s := openTest(t, smallConfig)
	model := map[string]string{}
	for len(model) < 2000 {
		model[randKey(r, 100_000)] = "v"
	}
	root := build(t, s, model)
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for trial := 0; trial < 300; trial++ {
		var rg Range
		if r.IntN(6) > 0 {
			rg.Start = []byte(randKey(r, 100_000))
		}
		if r.IntN(6) > 0 {
			rg.End = []byte(randKey(r, 100_000))
		}
		if trial%7 == 0 {
			rg = PrefixRange([]byte(fmt.Sprintf("k0%d", r.IntN(10))))
		}
		var want uint64
		for _, k := range keys {
			if rg.Contains([]byte(k)) {
				want++
			}
		}
		got, err := s.CountRange(ctx, root, rg)
		if err != nil || got != want {
			t.Fatalf("CountRange(%q, %q) = %d, %v; want %d", rg.Start, rg.End, got, err, want)
		}
	}
}

// TestParallelApplyMatchesModel applies large random batches, whose leaf
// level is rewritten by two goroutines, and checks the result against the
// model and a bulk build. Dense deletes make runs lose their boundaries and
// spill across the split, so the fallback to one goroutine runs too.
func TestParallelApplyMatchesModel(t *testing.T) {
	old := parallelMinEdits
	parallelMinEdits = 8
	t.Cleanup(func() { parallelMinEdits = old })
	fallbacks := parallelFallbacks.Load()
	for _, cfg := range []chunker.Config{smallConfig, {}} {
		for seed := uint64(1); seed <= 8; seed++ {
			r := rand.New(rand.NewPCG(seed, 9))
			s := openTest(t, cfg)
			model := map[string]string{}
			space := 200 + r.IntN(4000)
			root := node.EmptyRoot(node.XXH3)
			for round := 0; round < 8; round++ {
				var edits []Edit
				del := r.IntN(4) == 0 // some rounds mostly delete
				for n := 8 + r.IntN(space); n > 0; n-- {
					k := randKey(r, space)
					if del && r.IntN(4) != 0 || r.IntN(5) == 0 {
						edits = append(edits, Edit{Key: []byte(k), Delete: true})
						delete(model, k)
					} else {
						v := fmt.Sprintf("v%d", r.Uint32())
						edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
						model[k] = v
					}
				}
				root = apply(t, s, root, edits)
				if want := build(t, s, model); root != want {
					t.Fatalf("fanout %d seed %d round %d: applied root %s != built root %s", cfg.WithDefaults().LeafFanout, seed, round, root, want)
				}
			}
			checkContents(t, s, root, model)
		}
	}
	n := parallelFallbacks.Load() - fallbacks
	t.Logf("parallel levels redone on one goroutine: %d", n)
	if n == 0 {
		t.Fatal("no parallel level fell back: the test no longer covers the fallback")
	}
}
