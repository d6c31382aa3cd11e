package diff

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// smallConfig makes small nodes so that modest tests build deep trees.
var smallConfig = chunker.Config{LeafFanout: 4, BranchFanout: 4}

type model map[string]string

func (m model) clone() model {
	out := make(model, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (m model) keys() []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func openStore(t testing.TB, cfg chunker.Config) *tree.Store {
	t.Helper()
	s, err := tree.Open(t.TempDir(), &tree.Options{Chunker: cfg, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// build bulk-loads m into s and returns the root.
func build(t testing.TB, s *tree.Store, m model) node.Hash {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	bl := b.NewBuilder(context.Background())
	for _, k := range m.keys() {
		if err := bl.Add([]byte(k), []byte(m[k])); err != nil {
			b.Discard()
			t.Fatal(err)
		}
	}
	r, err := bl.Finish()
	if err != nil {
		b.Discard()
		t.Fatal(err)
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// applyChanges applies changes to root in s and returns the new root.
func applyChanges(t testing.TB, s *tree.Store, root node.Hash, cs []Change) node.Hash {
	t.Helper()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.ApplyValues(context.Background(), root, Edits(cs))
	if err != nil {
		b.Discard()
		t.Fatal(err)
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// collect drains a diff, failing the test on error.
func collect(t testing.TB, seq func(func(Change, error) bool)) []Change {
	t.Helper()
	var out []Change
	for c, err := range seq {
		if err != nil {
			t.Fatalf("diff: %v", err)
		}
		out = append(out, c)
	}
	return out
}

// want is an expected change in model terms: nil is absent.
type want struct {
	key      string
	old, new *string
}

func (w want) String() string {
	show := func(p *string) string {
		if p == nil {
			return "∅"
		}
		if len(*p) > 20 {
			return fmt.Sprintf("%q…(%d bytes)", (*p)[:20], len(*p))
		}
		return fmt.Sprintf("%q", *p)
	}
	return fmt.Sprintf("%s: %s → %s", w.key, show(w.old), show(w.new))
}

// modelDiff is the reference diff: every key whose presence or value
// differs between a and b, in key order, restricted to r.
func modelDiff(a, b model, r tree.Range) []want {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []want
	for k := range keys {
		if !r.Contains([]byte(k)) {
			continue
		}
		va, oka := a[k]
		vb, okb := b[k]
		if oka && okb && va == vb {
			continue
		}
		w := want{key: k}
		if oka {
			w.old = &va
		}
		if okb {
			w.new = &vb
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// readValue returns the bytes of v (nil for absent) from whichever of the
// stores holds its blobs.
func readValue(t testing.TB, v *node.Value, stores ...*tree.Store) *string {
	t.Helper()
	if v == nil {
		return nil
	}
	var lastErr error
	for _, s := range stores {
		b, err := s.ReadValue(context.Background(), *v)
		if err == nil {
			str := string(b)
			return &str
		}
		lastErr = err
	}
	t.Fatalf("read value: %v", lastErr)
	return nil
}

// asWants converts changes to model terms.
func asWants(t testing.TB, cs []Change, stores ...*tree.Store) []want {
	t.Helper()
	out := make([]want, len(cs))
	for i, c := range cs {
		out[i] = want{key: string(c.Key), old: readValue(t, c.Old, stores...), new: readValue(t, c.New, stores...)}
	}
	return out
}

func eqPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameWants(a, b []want) bool {
	return slices.EqualFunc(a, b, func(x, y want) bool { return x.key == y.key && eqPtr(x.old, y.old) && eqPtr(x.new, y.new) })
}

func checkWants(t testing.TB, what string, got, exp []want) {
	t.Helper()
	if sameWants(got, exp) {
		return
	}
	t.Errorf("%s: got %d changes, want %d", what, len(got), len(exp))
	for i := 0; i < len(got) || i < len(exp); i++ {
		var g, e string
		if i < len(got) {
			g = got[i].String()
		}
		if i < len(exp) {
			e = exp[i].String()
		}
		if g != e {
			t.Errorf("  first difference at %d: got %s, want %s", i, g, e)
			break
		}
	}
}

// checkOrder fails unless the changes' keys strictly ascend and every
// change is well formed.
func checkOrder(t testing.TB, cs []Change) {
	t.Helper()
	for i, c := range cs {
		if c.Old == nil && c.New == nil {
			t.Fatalf("change %d (%q) has neither old nor new value", i, c.Key)
		}
		if c.Old != nil && c.New != nil && c.Old.Equal(*c.New) {
			t.Fatalf("change %d (%q) has equal old and new values", i, c.Key)
		}
		if i > 0 && bytes.Compare(cs[i-1].Key, c.Key) >= 0 {
			t.Fatalf("change %d key %q does not follow %q", i, c.Key, cs[i-1].Key)
		}
	}
}

func randKey(r *rand.Rand, space int) string { return fmt.Sprintf("k%06d", r.IntN(space)) }

func randValue(r *rand.Rand) string {
	switch r.IntN(25) {
	case 0:
		// Out of line.
		return string(bytes.Repeat([]byte{byte('a' + r.IntN(26))}, node.MaxInlineValue+1+r.IntN(3000)))
	default:
		return fmt.Sprintf("v%d", r.Uint32())
	}
}

func randModel(r *rand.Rand, n, space int) model {
	m := model{}
	for len(m) < n && len(m) < space {
		m[randKey(r, space)] = randValue(r)
	}
	return m
}

// mutate returns a copy of m with n random puts and deletes over space.
func mutate(r *rand.Rand, m model, n, space int) model {
	out := m.clone()
	for i := 0; i < n; i++ {
		k := randKey(r, space)
		if r.IntN(3) == 0 {
			delete(out, k)
		} else {
			out[k] = randValue(r)
		}
	}
	return out
}

// countingSource wraps a Source and records its calls.
type countingSource struct {
	node.Source
	mu    sync.Mutex
	calls int
	nodes int
	seen  []node.Hash
}

func (c *countingSource) Nodes(ctx context.Context, hs []node.Hash) ([]*node.Node, error) {
	c.mu.Lock()
	c.calls++
	c.nodes += len(hs)
	c.seen = append(c.seen, hs...)
	c.mu.Unlock()
	return c.Source.Nodes(ctx, hs)
}

// height returns the number of levels of the tree at root.
func height(t testing.TB, s *tree.Store, root node.Hash) int {
	t.Helper()
	n, err := s.Node(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	return n.Level() + 1
}
