package diff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// pairScenario makes the two models of one diff test.
type pairScenario struct {
	name string
	make func(r *rand.Rand) (a, b model)
}

var pairScenarios = []pairScenario{
	{"empty-empty", func(r *rand.Rand) (model, model) { return model{}, model{} }},
	{"empty-full", func(r *rand.Rand) (model, model) { return model{}, randModel(r, 1500, 5000) }},
	{"full-empty", func(r *rand.Rand) (model, model) { return randModel(r, 1500, 5000), model{} }},
	{"identical", func(r *rand.Rand) (model, model) { a := randModel(r, 1500, 5000); return a, a.clone() }},
	{"single-key-each", func(r *rand.Rand) (model, model) {
		return model{"a": "1"}, model{"b": "1"}
	}},
	{"disjoint-halves", func(r *rand.Rand) (model, model) {
		// Every key of a sorts before every key of b.
		a, b := model{}, model{}
		for k, v := range randModel(r, 1500, 5000) {
			a["a"+k] = v
			b["b"+k] = v
		}
		return a, b
	}},
	{"disjoint-interleaved", func(r *rand.Rand) (model, model) {
		a, b := model{}, model{}
		for k, v := range randModel(r, 3000, 6000) {
			if k[len(k)-1]%2 == 0 {
				a[k] = v
			} else {
				b[k] = v
			}
		}
		return a, b
	}},
	{"one-modified", func(r *rand.Rand) (model, model) {
		a := randModel(r, 1500, 5000)
		b := a.clone()
		ks := a.keys()
		b[ks[r.IntN(len(ks))]] = "changed"
		return a, b
	}},
	{"one-added", func(r *rand.Rand) (model, model) {
		a := randModel(r, 1500, 5000)
		b := a.clone()
		b["k5000000"] = "new" // sorts after every other key
		b[fmt.Sprintf("k%06d5", r.IntN(5000))] = "new"
		delete(a, "k5000000")
		return a, b
	}},
	{"one-removed", func(r *rand.Rand) (model, model) {
		a := randModel(r, 1500, 5000)
		b := a.clone()
		ks := a.keys()
		delete(b, ks[r.IntN(len(ks))])
		return a, b
	}},
	{"one-large-value-modified", func(r *rand.Rand) (model, model) {
		a := randModel(r, 800, 5000)
		ks := a.keys()
		k := ks[r.IntN(len(ks))]
		a[k] = string(make([]byte, 5000))
		b := a.clone()
		b[k] = string(make([]byte, 5001))
		return a, b
	}},
	{"grown-taller", func(r *rand.Rand) (model, model) {
		// b holds a and many more keys after it, so b's tree is taller and
		// a's whole tree may appear inside it.
		a := randModel(r, 300, 1000)
		b := a.clone()
		for i := 0; i < 3000; i++ {
			b[fmt.Sprintf("m%06d", i)] = "more"
		}
		return a, b
	}},
	{"all-values-differ", func(r *rand.Rand) (model, model) {
		a := randModel(r, 1500, 5000)
		b := model{}
		for k, v := range a {
			b[k] = v + "'"
		}
		return a, b
	}},
	{"few-scattered-edits", func(r *rand.Rand) (model, model) {
		a := randModel(r, 2000, 5000)
		return a, mutate(r, a, 10, 5000)
	}},
	{"many-scattered-edits", func(r *rand.Rand) (model, model) {
		a := randModel(r, 2000, 5000)
		return a, mutate(r, a, 600, 5000)
	}},
	{"contiguous-run", func(r *rand.Rand) (model, model) {
		a := randModel(r, 2000, 5000)
		b := a.clone()
		lo := r.IntN(4000)
		for i := lo; i < lo+500; i++ {
			k := fmt.Sprintf("k%06d", i)
			if i%3 == 0 {
				delete(b, k)
			} else {
				b[k] = "run"
			}
		}
		return a, b
	}},
}

// TestDiffMatchesModel checks Diff against the difference of two maps for
// every scenario, several seeds, small and default fanouts, one and two
// stores, and default and tiny batches (which force segment splits). It
// also checks that the reverse diff is the inverse, that applying the diff
// to the old tree rebuilds the new root exactly, and that a diff of equal
// roots loads nothing.
func TestDiffMatchesModel(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []chunker.Config{smallConfig, {}} {
		for _, sc := range pairScenarios {
			for seed := uint64(1); seed <= 3; seed++ {
				for _, twoStores := range []bool{false, true} {
					name := fmt.Sprintf("fanout%d/%s/seed%d/twostores=%v", cfg.WithDefaults().LeafFanout, sc.name, seed, twoStores)
					t.Run(name, func(t *testing.T) {
						r := rand.New(rand.NewPCG(seed, 42))
						ma, mb := sc.make(r)
						sa := openStore(t, cfg)
						sb := sa
						if twoStores {
							sb = openStore(t, cfg)
						}
						ra, rb := build(t, sa, ma), build(t, sb, mb)
						exp := modelDiff(ma, mb, tree.Range{})
						for _, maxBatch := range []int{0, 5} {
							var st Stats
							opts := Options{Stats: &st, MaxBatch: maxBatch}
							fwd := collect(t, Diff(ctx, sa, ra, sb, rb, opts))
							checkOrder(t, fwd)
							checkWants(t, fmt.Sprintf("diff(a,b) batch %d", maxBatch), asWants(t, fwd, sa, sb), exp)
							if ra == rb && st.NodesLoaded != 0 {
								t.Errorf("equal roots loaded %d nodes", st.NodesLoaded)
							}
							rev := collect(t, Diff(ctx, sb, rb, sa, ra, Options{MaxBatch: maxBatch}))
							checkOrder(t, rev)
							inv := make([]want, len(exp))
							for i, w := range exp {
								inv[i] = want{key: w.key, old: w.new, new: w.old}
							}
							checkWants(t, fmt.Sprintf("diff(b,a) batch %d", maxBatch), asWants(t, rev, sa, sb), inv)
							if got := applyChanges(t, sa, ra, fwd); got != rb {
								t.Errorf("applying diff(a,b) to a gives root %s, want b's root %s", got, rb)
							}
						}
					})
				}
			}
		}
	}
}

// TestDiffRange checks that a range- or prefix-restricted diff equals the
// full diff filtered to the range.
func TestDiffRange(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(9, 9))
	s := openStore(t, smallConfig)
	ma := randModel(r, 3000, 8000)
	pairs := [][2]model{
		{ma, mutate(r, ma, 30, 8000)},
		{ma, mutate(r, ma, 2000, 8000)},
		{model{}, ma},
	}
	bound := func() []byte {
		switch r.IntN(5) {
		case 0:
			return nil
		case 1:
			return []byte(randKey(r, 8000)) // often an existing key
		case 2:
			return []byte(randKey(r, 8000) + "\x00") // just after one
		default:
			return []byte(fmt.Sprintf("k%0*d", 1+r.IntN(6), r.IntN(8000)))
		}
	}
	for pi, p := range pairs {
		ra, rb := build(t, s, p[0]), build(t, s, p[1])
		var ranges []tree.Range
		for i := 0; i < 40; i++ {
			ranges = append(ranges, tree.Range{Start: bound(), End: bound()})
		}
		ranges = append(ranges, tree.Range{End: []byte{}}, tree.Range{Start: []byte("k5"), End: []byte("k5")}, tree.Range{Start: []byte("k6"), End: []byte("k5")})
		for _, pre := range []string{"", "k", "k00", "k003", "k0031", "k9", "j", "l", "k007999"} {
			ranges = append(ranges, tree.PrefixRange([]byte(pre)))
		}
		for _, rg := range ranges {
			exp := modelDiff(p[0], p[1], rg)
			for _, maxBatch := range []int{0, 4} {
				cs := collect(t, Diff(ctx, s, ra, s, rb, Options{Range: rg, MaxBatch: maxBatch}))
				checkOrder(t, cs)
				checkWants(t, fmt.Sprintf("pair %d range [%q, %q) batch %d", pi, rg.Start, rg.End, maxBatch), asWants(t, cs, s), exp)
			}
		}
	}
}

// TestDiffRangeVisitsOnlyOverlappingNodes diffs two trees that differ in
// every value over a one-key range: only the paths to that key (and, at a
// node boundary, a neighbour per level) may be loaded.
func TestDiffRangeVisitsOnlyOverlappingNodes(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 5))
	s := openStore(t, smallConfig)
	ma := randModel(r, 4000, 10000)
	mb := model{}
	for k, v := range ma {
		mb[k] = v + "!"
	}
	ra, rb := build(t, s, ma), build(t, s, mb)
	h := height(t, s, ra)
	for i, k := range ma.keys() {
		if i%97 != 0 {
			continue
		}
		var st Stats
		rg := tree.Range{Start: []byte(k), End: []byte(k + "\x00")}
		cs := collect(t, Diff(ctx, s, ra, s, rb, Options{Range: rg, Stats: &st}))
		if len(cs) != 1 || string(cs[0].Key) != k {
			t.Fatalf("range of key %q: %d changes", k, len(cs))
		}
		if st.NodesLoaded > 2*h {
			t.Errorf("range of key %q loaded %d nodes; tree height %d allows %d", k, st.NodesLoaded, h, 2*h)
		}
	}
}

// TestDiffNodeBudget checks the cost bound: d scattered changes load at
// most a small multiple of d × height nodes, and a small diff takes one
// Nodes call per level per side.
func TestDiffNodeBudget(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 11))
	for _, cfg := range []chunker.Config{smallConfig, {}} {
		s := openStore(t, cfg)
		ma := model{}
		for i := 0; i < 30000; i++ {
			ma[fmt.Sprintf("k%07d", i*7)] = fmt.Sprint(i)
		}
		ra := build(t, s, ma)
		h := height(t, s, ra)
		for _, d := range []int{1, 3, 10, 100} {
			// d distinct keys, each updated, inserted or deleted.
			used := map[int]bool{}
			var edits []Change
			for len(used) < d {
				i := r.IntN(30000)
				if used[i] {
					continue
				}
				used[i] = true
				k := fmt.Sprintf("k%07d", i*7)
				x := node.InlineValue([]byte("x"))
				switch r.IntN(3) {
				case 0:
					edits = append(edits, Change{Key: []byte(k)}) // delete
				case 1:
					edits = append(edits, Change{Key: []byte(k), New: &x})
				default:
					k = fmt.Sprintf("k%07d", i*7+3) // insert between keys
					edits = append(edits, Change{Key: []byte(k), New: &x})
				}
			}
			rb := applyChanges(t, s, ra, edits)
			from, to := &countingSource{Source: s}, &countingSource{Source: s}
			var st Stats
			cs := collect(t, Diff(ctx, from, ra, to, rb, Options{Stats: &st}))
			if len(cs) != d {
				t.Fatalf("fanout %d, d=%d: %d changes", cfg.WithDefaults().LeafFanout, d, len(cs))
			}
			ratio := float64(st.NodesLoaded) / float64(d*h)
			t.Logf("fanout %d, height %d, d=%d: %d nodes loaded (%.2f × d × height), %d batches", cfg.WithDefaults().LeafFanout, h, d, st.NodesLoaded, ratio, st.Batches)
			if ratio > 3 {
				t.Errorf("fanout %d, d=%d: loaded %d nodes = %.2f × d × height, want ≤ 3", cfg.WithDefaults().LeafFanout, d, st.NodesLoaded, ratio)
			}
			if st.NodesLoaded != from.nodes+to.nodes || st.Batches != from.calls+to.calls {
				t.Errorf("Stats %+v disagree with the sources' counts (%d+%d nodes, %d+%d calls)", st, from.nodes, to.nodes, from.calls, to.calls)
			}
			if from.calls > h || to.calls > h {
				t.Errorf("d=%d: %d and %d Nodes calls for height %d; want one per level", d, from.calls, to.calls, h)
			}
		}
	}
}

// TestDiffEqualRootsLoadNothing checks that equal roots, and any range of
// them, cost no node loads, even from a source that holds nothing.
func TestDiffEqualRootsLoadNothing(t *testing.T) {
	var st Stats
	empty := &countingSource{Source: failingSource{}}
	h := fakeHash(123)
	for _, rg := range []tree.Range{{}, tree.PrefixRange([]byte("p"))} {
		cs := collect(t, Diff(context.Background(), empty, h, empty, h, Options{Range: rg, Stats: &st}))
		if len(cs) != 0 || st.NodesLoaded != 0 || empty.calls != 0 {
			t.Fatalf("equal roots: %d changes, stats %+v, %d calls", len(cs), st, empty.calls)
		}
	}
	// The empty tree's root is known without asking the source.
	cs := collect(t, Diff(context.Background(), empty, node.EmptyRoot(node.XXH3), empty, node.EmptyRoot(node.XXH3), Options{Stats: &st}))
	if len(cs) != 0 || empty.calls != 0 {
		t.Fatalf("empty roots: %d changes, %d calls", len(cs), empty.calls)
	}
}

// failingSource holds no node.
type failingSource struct{}

func (failingSource) Nodes(_ context.Context, hs []node.Hash) ([]*node.Node, error) {
	return nil, fmt.Errorf("test source: node %s: %w", hs[0], node.ErrNotFound)
}

// TestDiffStopsEarly checks that a consumer may stop at any point and that
// nothing is yielded afterwards.
func TestDiffStopsEarly(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 1))
	s := openStore(t, smallConfig)
	ma := randModel(r, 2000, 4000)
	ra, rb := build(t, s, ma), build(t, s, mutate(r, ma, 300, 4000))
	all := collect(t, Diff(ctx, s, ra, s, rb, Options{}))
	for _, stop := range []int{1, 2, len(all) / 2, len(all) - 1} {
		n := 0
		for c, err := range Diff(ctx, s, ra, s, rb, Options{MaxBatch: 8}) {
			if err != nil {
				t.Fatal(err)
			}
			if string(c.Key) != string(all[n].Key) {
				t.Fatalf("change %d: key %q, want %q", n, c.Key, all[n].Key)
			}
			n++
			if n == stop {
				break
			}
		}
		if n != stop {
			t.Fatalf("stopped after %d changes, want %d", n, stop)
		}
	}
}

// TestDiffCancelled checks that a cancelled context ends the diff with the
// context's error.
func TestDiffCancelled(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 2))
	s := openStore(t, smallConfig)
	ma := randModel(r, 500, 1000)
	ra, rb := build(t, s, ma), build(t, s, mutate(r, ma, 100, 1000))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var got error
	for _, err := range Diff(ctx, s, ra, s, rb, Options{}) {
		if err != nil {
			got = err
		}
	}
	if got != context.Canceled {
		t.Fatalf("error %v, want context.Canceled", got)
	}
}

// TestDiffStreams checks that changes are yielded while the walk is still
// going: with small batches, the first change of a diff in which every
// record differs arrives after only a path's worth of nodes is loaded,
// not the whole trees.
func TestDiffStreams(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(8, 8))
	s := openStore(t, smallConfig)
	ma := randModel(r, 4000, 10000)
	mb := model{}
	for k, v := range ma {
		mb[k] = v + "?"
	}
	ra, rb := build(t, s, ma), build(t, s, mb)
	src := &countingSource{Source: s}
	var st Stats
	n, atFirst := 0, 0
	for _, err := range Diff(ctx, src, ra, src, rb, Options{Stats: &st, MaxBatch: 8}) {
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			atFirst = src.nodes
		}
		n++
	}
	if n != len(ma) {
		t.Fatalf("%d changes, want %d", n, len(ma))
	}
	t.Logf("first change after %d of %d node loads", atFirst, st.NodesLoaded)
	if atFirst > st.NodesLoaded/20 {
		t.Errorf("first change after %d of %d node loads; the diff does not stream", atFirst, st.NodesLoaded)
	}
}

// TestDiffRandomBatchesAndRanges is a metamorphic test: random pairs of
// trees, random ranges and random batch sizes must all give the model's
// diff, so splitting segments to fit a batch never changes the result.
func TestDiffRandomBatchesAndRanges(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(21, 21))
	s := openStore(t, smallConfig)
	for iter := 0; iter < 60; iter++ {
		space := 200 + r.IntN(4000)
		ma := randModel(r, r.IntN(space), space)
		mb := mutate(r, ma, r.IntN(space), space)
		ra, rb := build(t, s, ma), build(t, s, mb)
		var rg tree.Range
		if r.IntN(3) > 0 {
			lo, hi := r.IntN(space), r.IntN(space)
			if lo > hi {
				lo, hi = hi, lo
			}
			rg = tree.Range{Start: []byte(fmt.Sprintf("k%06d", lo)), End: []byte(fmt.Sprintf("k%06d", hi+1))}
			if r.IntN(4) == 0 {
				rg.Start = nil
			}
		}
		maxBatch := 4 + r.IntN(40)
		var st Stats
		cs := collect(t, Diff(ctx, s, ra, s, rb, Options{Range: rg, MaxBatch: maxBatch, Stats: &st, TrustHashes: iter%2 == 0}))
		checkOrder(t, cs)
		checkWants(t, fmt.Sprintf("iteration %d (range [%q, %q), batch %d)", iter, rg.Start, rg.End, maxBatch), asWants(t, cs, s), modelDiff(ma, mb, rg))
		if st.NodesLoaded > 0 && st.Batches == 0 {
			t.Fatalf("stats %+v", st)
		}
	}
}

// TestDiffComparesOutOfLineValuesByRef diffs trees whose out-of-line
// values have no blobs anywhere: only references are compared, so the
// diff succeeds and reports exactly the keys whose reference or size
// changed.
func TestDiffComparesOutOfLineValuesByRef(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallConfig)
	ref := func(b byte, size uint64) *node.Value {
		v := node.RefValue(fakeHash(b), size)
		return &v
	}
	var edits []Change
	for i := 0; i < 200; i++ {
		edits = append(edits, Change{Key: []byte(fmt.Sprintf("k%03d", i)), New: ref(byte(i), 5000)})
	}
	ra := applyChanges(t, s, node.EmptyRoot(node.XXH3), edits)
	changed := []Change{
		{Key: []byte("k007"), New: ref(200, 5000)}, // another blob
		{Key: []byte("k050"), New: ref(50, 5001)},  // same blob hash, other size
		{Key: []byte("k100"), New: ref(100, 5000)}, // unchanged
	}
	rb := applyChanges(t, s, ra, changed)
	cs := collect(t, Diff(ctx, s, ra, s, rb, Options{}))
	if len(cs) != 2 || string(cs[0].Key) != "k007" || string(cs[1].Key) != "k050" {
		t.Fatalf("changes %v, want k007 and k050", cs)
	}
	for _, c := range cs {
		if !c.Old.IsRef || !c.New.IsRef || c.Kind() != Modified {
			t.Errorf("%s: %+v → %+v, want two references", c.Key, *c.Old, *c.New)
		}
	}
	if cs[0].New.Ref != (fakeHash(200)) || cs[1].New.Size != 5001 {
		t.Errorf("new values %+v, %+v", *cs[0].New, *cs[1].New)
	}
}
