package scope

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/arbor-sync/arbor/tree"
)

// ErrOutOfScope reports a key outside a scope.
var ErrOutOfScope = errors.New("key outside scope")

// Scope is a normalised union of key ranges. Treat it as immutable.
type Scope struct {
	ranges []tree.Range // sorted, disjoint, non-adjacent, non-empty
}

// All is the scope of every key.
var All = Scope{ranges: []tree.Range{{}}}

// New returns the union of ranges. A Range with nil Start and End is the
// whole keyspace; empty ranges (Start ≥ End) are dropped.
func New(ranges ...tree.Range) Scope {
	rs := make([]tree.Range, 0, len(ranges))
	for _, r := range ranges {
		if r.Start != nil && r.End != nil && bytes.Compare(r.Start, r.End) >= 0 {
			continue
		}
		if len(r.Start) == 0 {
			r.Start = nil
		}
		rs = append(rs, tree.Range{Start: bytes.Clone(r.Start), End: bytes.Clone(r.End)})
	}
	sort.Slice(rs, func(i, j int) bool { return cmpStart(rs[i].Start, rs[j].Start) < 0 })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].End == nil || cmpStart(r.Start, out[n-1].End) <= 0) {
			// Overlapping or touching: extend the previous range.
			if out[n-1].End != nil && (r.End == nil || bytes.Compare(r.End, out[n-1].End) > 0) {
				out[n-1].End = r.End
			}
			continue
		}
		out = append(out, r)
	}
	return Scope{ranges: out}
}

// cmpStart compares range starts, nil being the least key.
func cmpStart(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return bytes.Compare(a, b)
}

// Prefixes returns the scope of keys beginning with any of the prefixes. An
// empty prefix means every key.
func Prefixes(prefixes ...[]byte) Scope {
	rs := make([]tree.Range, len(prefixes))
	for i, p := range prefixes {
		rs[i] = tree.PrefixRange(p)
	}
	return New(rs...)
}

// Ranges returns the scope's ranges in key order. The caller must not
// modify them.
func (s Scope) Ranges() []tree.Range { return s.ranges }

// IsEmpty reports whether the scope holds no key.
func (s Scope) IsEmpty() bool { return len(s.ranges) == 0 }

// IsAll reports whether the scope holds every key.
func (s Scope) IsAll() bool {
	return len(s.ranges) == 1 && s.ranges[0].Start == nil && s.ranges[0].End == nil
}

// Equal reports whether s and o hold the same keys.
func (s Scope) Equal(o Scope) bool {
	if len(s.ranges) != len(o.ranges) {
		return false
	}
	for i := range s.ranges {
		a, b := s.ranges[i], o.ranges[i]
		if !bytes.Equal(a.Start, b.Start) || (a.Start == nil) != (b.Start == nil) ||
			!bytes.Equal(a.End, b.End) || (a.End == nil) != (b.End == nil) {
			return false
		}
	}
	return true
}

// Contains reports whether key lies in the scope.
func (s Scope) Contains(key []byte) bool {
	// The last range whose start is ≤ key is the only candidate.
	i := sort.Search(len(s.ranges), func(i int) bool { return cmpStart(s.ranges[i].Start, key) > 0 }) - 1
	return i >= 0 && s.ranges[i].Contains(key)
}

// Check returns an error wrapping ErrOutOfScope if key is outside s.
func (s Scope) Check(key []byte) error {
	if s.Contains(key) {
		return nil
	}
	return fmt.Errorf("%w: %q is not in %s", ErrOutOfScope, key, s)
}

// Overlaps reports whether any key k with lo < k ≤ hi lies in the scope. A
// nil lo is unbounded below and a nil hi unbounded above. This is the test
// for a subtree of a prolly tree, whose keys lie after the previous
// separator lo and up to its own separator hi.
func (s Scope) Overlaps(lo, hi []byte) bool {
	var succ []byte // the least key above lo
	if lo != nil {
		succ = append(bytes.Clone(lo), 0)
	}
	for _, r := range s.ranges {
		// The least key of the interval that is also ≥ Start.
		k := r.Start
		if k == nil || (succ != nil && bytes.Compare(succ, k) > 0) {
			k = succ
		}
		if k == nil {
			k = []byte{}
		}
		if hi != nil && bytes.Compare(k, hi) > 0 {
			return false // later ranges start later still
		}
		if r.End == nil || bytes.Compare(k, r.End) < 0 {
			return true
		}
	}
	return false
}

// Intersect returns the keys in both s and o.
func (s Scope) Intersect(o Scope) Scope {
	var out []tree.Range
	for _, a := range s.ranges {
		for _, b := range o.ranges {
			r := tree.Range{Start: a.Start, End: a.End}
			if cmpStart(b.Start, r.Start) > 0 {
				r.Start = b.Start
			}
			if b.End != nil && (r.End == nil || bytes.Compare(b.End, r.End) < 0) {
				r.End = b.End
			}
			out = append(out, r)
		}
	}
	return New(out...)
}

// Union returns the keys in s or o.
func (s Scope) Union(o Scope) Scope {
	return New(append(append([]tree.Range(nil), s.ranges...), o.ranges...)...)
}

// Covers reports whether every key of o lies in s.
func (s Scope) Covers(o Scope) bool { return s.Intersect(o).Equal(o) }

// String renders the scope for messages, e.g. `["a/", "a0") ∪ ["x", ∞)`.
func (s Scope) String() string {
	if s.IsEmpty() {
		return "∅"
	}
	if s.IsAll() {
		return "all keys"
	}
	parts := make([]string, len(s.ranges))
	for i, r := range s.ranges {
		start, end := "−∞", "∞"
		if r.Start != nil {
			start = fmt.Sprintf("%q", r.Start)
		}
		if r.End != nil {
			end = fmt.Sprintf("%q", r.End)
		}
		parts[i] = "[" + start + ", " + end + ")"
	}
	return strings.Join(parts, " ∪ ")
}

// ParsePrefixList parses a comma-separated list of prefixes, as in a token
// file's read= and write= fields. An empty field or "*" means every key.
func ParsePrefixList(s string) (Scope, error) {
	if s == "" || s == "*" {
		return All, nil
	}
	var ps [][]byte
	for _, p := range strings.Split(s, ",") {
		if p == "" {
			return Scope{}, fmt.Errorf("scope %q: empty prefix in list", s)
		}
		ps = append(ps, []byte(p))
	}
	return Prefixes(ps...), nil
}
