package scope

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/tree"
)

func r(start, end string) tree.Range {
	var rr tree.Range
	if start != "" {
		rr.Start = []byte(start)
	}
	if end != "" {
		rr.End = []byte(end)
	}
	return rr
}

func TestNewNormalises(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []tree.Range
		want string
	}{
		{"empty", nil, "∅"},
		{"all", []tree.Range{{}}, "all keys"},
		{"drops empty ranges", []tree.Range{r("b", "a"), r("c", "c")}, "∅"},
		{"sorts", []tree.Range{r("x", "y"), r("a", "b")}, `["a", "b") ∪ ["x", "y")`},
		{"merges overlap", []tree.Range{r("a", "m"), r("c", "z")}, `["a", "z")`},
		{"merges touching", []tree.Range{r("a", "b"), r("b", "c")}, `["a", "c")`},
		{"unbounded end swallows", []tree.Range{r("m", ""), r("p", "q")}, `["m", ∞)`},
		{"unbounded start", []tree.Range{r("", "c"), r("b", "d")}, `[−∞, "d")`},
		{"nested", []tree.Range{r("a", "z"), r("c", "d")}, `["a", "z")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := New(tc.in...).String(); got != tc.want {
				t.Fatalf("New(%v) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
	if !Prefixes([]byte("")).IsAll() {
		t.Fatal("the empty prefix is not every key")
	}
}

func TestParsePrefixList(t *testing.T) {
	s, err := ParsePrefixList("a/,shared/")
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"a/1": true, "shared/x": true, "a": false, "b/1": false, "shared": false} {
		if s.Contains([]byte(key)) != want {
			t.Errorf("Contains(%q) = %v", key, !want)
		}
	}
	if all, _ := ParsePrefixList(""); !all.IsAll() {
		t.Error(`"" is not every key`)
	}
	if _, err := ParsePrefixList("a/,,b/"); err == nil {
		t.Error("an empty list element is accepted")
	}
	if err := s.Check([]byte("zzz")); !errors.Is(err, ErrOutOfScope) {
		t.Errorf("Check outside = %v, want ErrOutOfScope", err)
	}
}

// randScope draws a scope over a small alphabet so that overlaps are common.
func randScope(rng *rand.Rand) Scope {
	var rs []tree.Range
	for n := rng.IntN(4); n > 0; n-- {
		if rng.IntN(4) == 0 {
			rs = append(rs, tree.PrefixRange([]byte(randKey(rng))))
			continue
		}
		a, b := randKey(rng), randKey(rng)
		if rng.IntN(8) == 0 {
			a = ""
		}
		if rng.IntN(8) == 0 {
			b = ""
		}
		rs = append(rs, r(a, b))
	}
	return New(rs...)
}

func randKey(rng *rand.Rand) string {
	b := make([]byte, 1+rng.IntN(3))
	for i := range b {
		b[i] = "abcd\xff"[rng.IntN(5)]
	}
	return string(b)
}

// allKeys enumerates every key up to length 3 over the test alphabet and
// \x00, so that every non-empty test range holds an enumerated key.
func allKeys() [][]byte {
	var out [][]byte
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		if len(prefix) == 3 {
			return
		}
		for _, c := range []byte("\x00abcd\xff") {
			k := append(bytes.Clone(prefix), c)
			out = append(out, k)
			gen(k)
		}
	}
	gen(nil)
	return out
}

// TestSetAlgebraMatchesModel checks Contains, Intersect, Union, Covers and
// Overlaps against brute force over every short key.
func TestSetAlgebraMatchesModel(t *testing.T) {
	keys := allKeys()
	rng := rand.New(rand.NewPCG(1, 2))
	inRaw := func(rs []tree.Range, k []byte) bool {
		for _, r := range rs {
			if r.Contains(k) {
				return true
			}
		}
		return false
	}
	for trial := 0; trial < 400; trial++ {
		a, b := randScope(rng), randScope(rng)
		and, or := a.Intersect(b), a.Union(b)
		coversWant := true
		for _, k := range keys {
			ia, ib := a.Contains(k), b.Contains(k)
			if ia != inRaw(a.Ranges(), k) {
				t.Fatalf("%s: Contains(%q) disagrees with its ranges", a, k)
			}
			if and.Contains(k) != (ia && ib) {
				t.Fatalf("(%s) ∩ (%s) = %s wrong at %q", a, b, and, k)
			}
			if or.Contains(k) != (ia || ib) {
				t.Fatalf("(%s) ∪ (%s) = %s wrong at %q", a, b, or, k)
			}
			if ib && !ia {
				coversWant = false
			}
		}
		if a.Covers(b) != coversWant {
			t.Fatalf("(%s).Covers(%s) = %v, want %v", a, b, !coversWant, coversWant)
		}
		// Overlaps over random intervals (lo, hi].
		for i := 0; i < 20; i++ {
			var lo, hi []byte
			if rng.IntN(5) > 0 {
				lo = []byte(randKey(rng))
			}
			if rng.IntN(5) > 0 {
				hi = []byte(randKey(rng))
			}
			want := false
			for _, k := range keys {
				if (lo == nil || bytes.Compare(k, lo) > 0) && (hi == nil || bytes.Compare(k, hi) <= 0) && a.Contains(k) {
					want = true
					break
				}
			}
			// Keys longer than 3 bytes can make an interval overlap that the
			// enumeration misses; only check the cases the model decides.
			if want && !a.Overlaps(lo, hi) {
				t.Fatalf("(%s).Overlaps(%q, %q) = false, but a key in the interval is in scope", a, lo, hi)
			}
			if !want && a.Overlaps(lo, hi) && hi != nil && len(hi) <= 3 && !longerKeyWitness(a, lo, hi) {
				t.Fatalf("(%s).Overlaps(%q, %q) = true, but no key in the interval is in scope", a, lo, hi)
			}
		}
	}
}

// longerKeyWitness looks for a key of up to 5 bytes in (lo, hi] that is in s,
// which the 3-byte enumeration cannot see.
func longerKeyWitness(s Scope, lo, hi []byte) bool {
	for _, r := range s.Ranges() {
		for _, k := range [][]byte{r.Start, append(bytes.Clone(lo), 0), append(bytes.Clone(lo), 0, 0)} {
			if k == nil {
				continue
			}
			if (lo == nil || bytes.Compare(k, lo) > 0) && bytes.Compare(k, hi) <= 0 && s.Contains(k) {
				return true
			}
		}
	}
	return false
}

func TestOverlapsTable(t *testing.T) {
	s := Prefixes([]byte("m/"))
	for _, tc := range []struct {
		lo, hi string
		want   bool
	}{
		{"", "", true},
		{"", "a", false},
		{"", "m/", true},
		{"m/zz", "", true},
		{"m0", "", false},
		{"l", "m", false},
		{"l", "m/", true},
		{"m/\xff\xff", "n", true},
	} {
		var lo, hi []byte
		if tc.lo != "" {
			lo = []byte(tc.lo)
		}
		if tc.hi != "" {
			hi = []byte(tc.hi)
		}
		if got := s.Overlaps(lo, hi); got != tc.want {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}
