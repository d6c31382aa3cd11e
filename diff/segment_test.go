package diff

import (
	"bytes"
	"testing"
)

// TestOverlaps checks the interval test that decides which nodes a
// range-restricted diff loads: (lo, hi] against [start, end), nil bounds
// unbounded.
func TestOverlaps(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name               string
		lo, hi, start, end []byte
		want               bool
	}{
		{"all unbounded", nil, nil, nil, nil, true},
		{"inside", b("a"), b("m"), b("c"), b("d"), true},
		{"hi below start", b("a"), b("b"), b("c"), nil, false},
		{"hi equals start", b("a"), b("c"), b("c"), nil, true},
		{"lo equals end", b("d"), b("m"), nil, b("d"), false},
		{"lo above end", b("e"), b("m"), nil, b("d"), false},
		{"only lo's successor below end", b("c"), b("m"), nil, b("d"), true},
		{"end is lo's successor: no key between", b("c"), b("m"), nil, b("c\x00"), false},
		{"end just past lo's successor", b("c"), b("m"), nil, b("c\x00\x00"), true},
		{"unbounded node below", nil, b("b"), b("a"), b("z"), true},
		{"unbounded node above", b("y"), nil, b("a"), b("z"), true},
		{"root against empty window", nil, nil, b("b"), b("a"), true}, // callers drop empty windows first
	}
	for _, c := range cases {
		if got := overlaps(c.lo, c.hi, c.start, c.end); got != c.want {
			t.Errorf("%s: overlaps((%q, %q], [%q, %q)) = %v, want %v", c.name, c.lo, c.hi, c.start, c.end, got, c.want)
		}
	}
}

// TestBoundHelpers checks the helpers that combine bounds, where nil means
// unbounded (below for a start, above for an end or an upper key).
func TestBoundHelpers(t *testing.T) {
	a, z := []byte("a"), []byte("z")
	if cmpHi(nil, nil) != 0 || cmpHi(nil, a) != 1 || cmpHi(a, nil) != -1 || cmpHi(a, z) != -1 {
		t.Error("cmpHi mishandles nil as +∞")
	}
	if !bytes.Equal(minEnd(nil, a), a) || !bytes.Equal(minEnd(a, nil), a) || !bytes.Equal(minEnd(z, a), a) || minEnd(nil, nil) != nil {
		t.Error("minEnd wrong")
	}
	if !bytes.Equal(maxStart(nil, a), a) || !bytes.Equal(maxStart(a, nil), a) || !bytes.Equal(maxStart(a, z), z) || maxStart(nil, nil) != nil {
		t.Error("maxStart wrong")
	}
	if s := succ(a); !bytes.Equal(s, []byte("a\x00")) || &s[0] == &a[0] {
		t.Errorf("succ(a) = %q", s)
	}
	for k, want := range map[Kind]string{Added: "added", Removed: "removed", Modified: "modified", 0: "Kind(0)"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), want)
		}
	}
}
