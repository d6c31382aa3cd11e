package diff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

func sp(s string) *string { return &s }

var (
	bigBase   = strings.Repeat("B", 3000)
	bigLocal  = strings.Repeat("L", 3000)
	bigServer = strings.Repeat("S", 3000)
)

// mergeRow is one line of the merge truth table: a key's value in the base,
// local and server trees (nil: absent) and what Merge must report for it.
type mergeRow struct {
	name                string
	base, local, server *string
	toServer, toLocal   *want // nil: the key must not be in that list
	over                *want // old = local, new = server; nil: no conflict
}

func (r mergeRow) key() string { return "row-" + r.name }

var mergeTable = []mergeRow{
	// Base present; each side leaves it unchanged, updates it or deletes it.
	{name: "unchanged/unchanged", base: sp("b"), local: sp("b"), server: sp("b")},
	{name: "unchanged/updated", base: sp("b"), local: sp("b"), server: sp("S"),
		toLocal: &want{old: sp("b"), new: sp("S")}},
	{name: "unchanged/deleted", base: sp("b"), local: sp("b"), server: nil,
		toLocal: &want{old: sp("b"), new: nil}},
	{name: "updated/unchanged", base: sp("b"), local: sp("L"), server: sp("b"),
		toServer: &want{old: sp("b"), new: sp("L")}},
	{name: "updated/updated-differently", base: sp("b"), local: sp("L"), server: sp("S"),
		toLocal: &want{old: sp("L"), new: sp("S")}, over: &want{old: sp("L"), new: sp("S")}},
	{name: "updated/updated-same", base: sp("b"), local: sp("X"), server: sp("X")},
	{name: "updated/deleted", base: sp("b"), local: sp("L"), server: nil,
		toLocal: &want{old: sp("L"), new: nil}, over: &want{old: sp("L"), new: nil}},
	{name: "deleted/unchanged", base: sp("b"), local: nil, server: sp("b"),
		toServer: &want{old: sp("b"), new: nil}},
	{name: "deleted/updated", base: sp("b"), local: nil, server: sp("S"),
		toLocal: &want{old: nil, new: sp("S")}, over: &want{old: nil, new: sp("S")}},
	{name: "deleted/deleted", base: sp("b"), local: nil, server: nil},
	// Base absent; each side leaves it absent or inserts it.
	{name: "absent/absent", base: nil, local: nil, server: nil},
	{name: "absent/inserted", base: nil, local: nil, server: sp("S"),
		toLocal: &want{old: nil, new: sp("S")}},
	{name: "inserted/absent", base: nil, local: sp("L"), server: nil,
		toServer: &want{old: nil, new: sp("L")}},
	{name: "inserted/inserted-differently", base: nil, local: sp("L"), server: sp("S"),
		toLocal: &want{old: sp("L"), new: sp("S")}, over: &want{old: sp("L"), new: sp("S")}},
	{name: "inserted/inserted-same", base: nil, local: sp("X"), server: sp("X")},
	// Out-of-line values, compared by reference.
	{name: "large-updated/large-updated-differently", base: &bigBase, local: &bigLocal, server: &bigServer,
		toLocal: &want{old: &bigLocal, new: &bigServer}, over: &want{old: &bigLocal, new: &bigServer}},
	{name: "large-updated/large-updated-same", base: &bigBase, local: &bigServer, server: &bigServer},
	{name: "large-unchanged/large-updated", base: &bigBase, local: &bigBase, server: &bigServer,
		toLocal: &want{old: &bigBase, new: &bigServer}},
	{name: "large-updated/unchanged", base: &bigBase, local: &bigLocal, server: &bigBase,
		toServer: &want{old: &bigBase, new: &bigLocal}},
}

// mergeModel is the reference three-way merge of one key: the merged value
// and the expected edits, from the rules alone.
func mergeModel(base, local, server *string) (merged *string, toServer, toLocal, over *want) {
	lc, sc := !eqPtr(local, base), !eqPtr(server, base)
	switch {
	case lc && !sc:
		return local, &want{old: server, new: local}, nil, nil
	case sc && eqPtr(local, server):
		return server, nil, nil, nil
	case sc && !lc:
		return server, nil, &want{old: local, new: server}, nil
	case sc && lc:
		return server, nil, &want{old: local, new: server}, &want{old: local, new: server}
	}
	return base, nil, nil, nil
}

// TestMergeTruthTableModel checks the hand-written table against the model,
// so that both state the same rules.
func TestMergeTruthTableModel(t *testing.T) {
	for _, row := range mergeTable {
		_, ts, tl, ov := mergeModel(row.base, row.local, row.server)
		for _, c := range []struct {
			what      string
			got, want *want
		}{{"toServer", ts, row.toServer}, {"toLocal", tl, row.toLocal}, {"overridden", ov, row.over}} {
			if (c.got == nil) != (c.want == nil) || (c.got != nil && !(eqPtr(c.got.old, c.want.old) && eqPtr(c.got.new, c.want.new))) {
				t.Errorf("%s: model %s = %v, table says %v", row.name, c.what, c.got, c.want)
			}
		}
	}
}

// mergeCase is the input of one Merge test: three models.
type mergeCase struct{ base, local, server model }

// checkMerge runs Merge with base and server in one store and local in
// another, checks the result against mergeModel key by key, and checks
// that applying the edits makes both sides equal to the merged model.
func checkMerge(t *testing.T, c mergeCase, maxBatch int) {
	t.Helper()
	ctx := context.Background()
	ss, ls := openStore(t, smallConfig), openStore(t, smallConfig)
	baseRoot, serverRoot := build(t, ss, c.base), build(t, ss, c.server)
	localRoot := build(t, ls, c.local)
	var st Stats
	res, err := Merge(ctx, ss, ls, ss, baseRoot, localRoot, serverRoot, Options{Stats: &st, MaxBatch: maxBatch})
	if err != nil {
		t.Fatal(err)
	}
	// The expected result, key by key.
	keys := map[string]bool{}
	for _, m := range []model{c.base, c.local, c.server} {
		for k := range m {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	get := func(m model, k string) *string {
		if v, ok := m[k]; ok {
			return &v
		}
		return nil
	}
	merged := model{}
	var expS, expL, expO []want
	for _, k := range sorted {
		mv, ts, tl, ov := mergeModel(get(c.base, k), get(c.local, k), get(c.server, k))
		if mv != nil {
			merged[k] = *mv
		}
		for _, p := range []struct {
			w   *want
			out *[]want
		}{{ts, &expS}, {tl, &expL}, {ov, &expO}} {
			if p.w != nil {
				w := *p.w
				w.key = k
				*p.out = append(*p.out, w)
			}
		}
	}
	checkOrder(t, res.ToServer)
	checkOrder(t, res.ToLocal)
	checkWants(t, "ToServer", asWants(t, res.ToServer, ss, ls), expS)
	checkWants(t, "ToLocal", asWants(t, res.ToLocal, ss, ls), expL)
	gotO := make([]want, len(res.Overridden))
	for i, o := range res.Overridden {
		gotO[i] = want{key: string(o.Key), old: readValue(t, o.Local, ss, ls), new: readValue(t, o.Server, ss, ls)}
	}
	checkWants(t, "Overridden", gotO, expO)
	// Convergence: both sides reach the merged records, root for root.
	wantRoot := build(t, ss, merged)
	if got := applyChanges(t, ss, serverRoot, res.ToServer); got != wantRoot {
		t.Errorf("server after ToServer: root %s, want merged root %s", got, wantRoot)
	}
	if got := applyChanges(t, ls, localRoot, res.ToLocal); got != wantRoot {
		t.Errorf("local after ToLocal: root %s, want merged root %s", got, wantRoot)
	}
}

// TestMergeTruthTable runs every row of the truth table through Merge,
// each row alone and all rows together among unchanged filler records
// (so the trees are several levels deep), and checks the edits against
// the table and the convergence of both sides.
func TestMergeTruthTable(t *testing.T) {
	makeCase := func(rows []mergeRow, filler int) mergeCase {
		c := mergeCase{model{}, model{}, model{}}
		for i := 0; i < filler; i++ {
			k := fmt.Sprintf("filler-%05d", i)
			c.base[k], c.local[k], c.server[k] = "f", "f", "f"
		}
		for _, r := range rows {
			for _, p := range []struct {
				v *string
				m model
			}{{r.base, c.base}, {r.local, c.local}, {r.server, c.server}} {
				if p.v != nil {
					p.m[r.key()] = *p.v
				}
			}
		}
		return c
	}
	for _, row := range mergeTable {
		t.Run(row.name, func(t *testing.T) {
			checkMerge(t, makeCase([]mergeRow{row}, 3), 0)
			// Check the row against the table itself, not only the model.
			c := makeCase([]mergeRow{row}, 0)
			ctx := context.Background()
			s := openStore(t, smallConfig)
			res, err := Merge(ctx, s, s, s, build(t, s, c.base), build(t, s, c.local), build(t, s, c.server), Options{})
			if err != nil {
				t.Fatal(err)
			}
			one := func(exp *want) []want {
				if exp == nil {
					return nil
				}
				w := *exp
				w.key = row.key()
				return []want{w}
			}
			checkWants(t, "ToServer", asWants(t, res.ToServer, s), one(row.toServer))
			checkWants(t, "ToLocal", asWants(t, res.ToLocal, s), one(row.toLocal))
			var gotO []want
			for _, o := range res.Overridden {
				gotO = append(gotO, want{key: string(o.Key), old: readValue(t, o.Local, s), new: readValue(t, o.Server, s)})
			}
			checkWants(t, "Overridden", gotO, one(row.over))
		})
	}
	t.Run("all-rows-together", func(t *testing.T) {
		for _, mb := range []int{0, 4} {
			checkMerge(t, makeCase(mergeTable, 500), mb)
		}
	})
}

// TestMergeRandom checks Merge against the model on random base, local and
// server trees with overlapping edits, including identical changes on
// both sides and out-of-line values.
func TestMergeRandom(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 77))
			space := 500 + r.IntN(3000)
			base := randModel(r, space/2, space)
			local := mutate(r, base, r.IntN(200), space)
			server := mutate(r, base, r.IntN(200), space)
			for i := r.IntN(30); i > 0; i-- {
				k := randKey(r, space)
				switch r.IntN(2) {
				case 0:
					v := randValue(r)
					local[k], server[k] = v, v
				default:
					delete(local, k)
					delete(server, k)
				}
			}
			checkMerge(t, mergeCase{base, local, server}, []int{0, 4}[seed%2])
		})
	}
}

// TestMergeEqualSidesLoadNothing checks that equal local and server roots
// need no work, whatever the base.
func TestMergeEqualSidesLoadNothing(t *testing.T) {
	var st Stats
	src := &countingSource{Source: failingSource{}}
	res, err := Merge(context.Background(), src, src, src, fakeHash(1), fakeHash(2), fakeHash(2), Options{Stats: &st})
	if err != nil || len(res.ToLocal)+len(res.ToServer)+len(res.Overridden) != 0 || src.calls != 0 {
		t.Fatalf("Merge of equal sides = %+v, %v after %d calls", res, err, src.calls)
	}
}

// TestMergeError checks that a failing source ends Merge with an error
// naming the diff that failed.
func TestMergeError(t *testing.T) {
	s := openStore(t, smallConfig)
	root := build(t, s, model{"a": "1"})
	_, err := Merge(context.Background(), s, s, failingSource{}, node.EmptyRoot(node.XXH3), root, fakeHash(9), Options{})
	if err == nil || !strings.Contains(err.Error(), "base→server") {
		t.Fatalf("Merge error %v, want one naming the base→server diff", err)
	}
}
