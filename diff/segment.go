package diff

import (
	"bytes"
	"fmt"

	"github.com/arbor-sync/arbor/node"
)

// expand completes one step on g, whose acting sides' nodes are loaded:
// each acting branch side is replaced by its children that overlap g's key
// window, and when both sides are then at one level, subtrees with equal
// hashes are dropped and g is cut into the pieces between them. The pieces
// are appended to out in key order.
func expand(g *segment, out []*segment) []*segment {
	act := g.acting()
	if !act[0] && !act[1] {
		return append(out, g)
	}
	for i := range act {
		if act[i] && g.s[i].level > 0 {
			g.s[i] = descend(g.s[i], g.start, g.end)
		}
	}
	switch l0, l1 := g.s[0].lvl(), g.s[1].lvl(); {
	case l0 < 0 && l1 < 0:
		return out
	case l0 == l1:
		return matchSplit(g, out)
	}
	return append(out, g)
}

// descend returns the children of sd's loaded branch nodes that overlap
// [start, end), one level down.
func descend(sd side, start, end []byte) side {
	var kids []sub
	for _, p := range sd.subs {
		n := p.n
		i, lo := 0, p.lo
		if start != nil {
			// Entries before the first key ≥ start end before the window.
			if i = n.Search(start); i > 0 {
				lo = n.Key(i - 1)
			}
		}
		for ; i < n.Len(); i++ {
			hi := n.Key(i)
			if !overlaps(lo, hi, start, end) {
				break // this child and every later one lie past end
			}
			h, c := n.Child(i)
			kids = append(kids, sub{h: h, lo: lo, hi: hi, count: c, level: sd.level - 1})
			lo = hi
		}
	}
	return side{subs: kids, level: sd.level - 1}
}

// matchSplit drops the subtrees g's two sides (at one level) have in
// common and appends the pieces of g between them to out. Equal hashes
// mean equal records, hence equal last keys, so a merge walk on the last
// keys finds every common subtree. Each side's records before a common
// subtree are below its first key on both sides, and each side's records
// after it are above its last key, so the pieces are independent and in
// key order.
func matchSplit(g *segment, out []*segment) []*segment {
	l, r := g.s[0].subs, g.s[1].subs
	piece := func(ls, rs []sub) {
		if len(ls) == 0 && len(rs) == 0 {
			return
		}
		p := &segment{start: g.start, end: g.end}
		p.s[0] = side{subs: ls, level: g.s[0].level}
		p.s[1] = side{subs: rs, level: g.s[1].level}
		out = append(out, p)
	}
	a, b, i, j := 0, 0, 0, 0
	for i < len(l) && j < len(r) {
		switch c := cmpHi(l[i].hi, r[j].hi); {
		case c < 0:
			i++
		case c > 0:
			j++
		default:
			if l[i].h == r[j].h {
				piece(l[a:i], r[b:j])
				a, b = i+1, j+1
			}
			i++
			j++
		}
	}
	piece(l[a:], r[b:])
	return out
}

// split cuts g, whose next step needs more nodes than a batch (n per
// side), in two at the last key of the middle subtree of its larger acting
// side. A subtree of the other side that straddles the cut goes to both
// pieces, each clipped to its side of the cut. A piece whose key window is
// empty is returned as nil.
func split(g *segment, n [2]int) (a, b *segment) {
	k := 0
	if n[1] > n[0] {
		k = 1
	}
	big, other := g.s[k].subs, g.s[1-k].subs
	m := len(big) / 2 // ≥ 2: n[k] > minMaxBatch
	cut := big[m-1].hi
	// j: the first subtree of the other side that ends after the cut.
	j := 0
	for j < len(other) && cmpHi(other[j].hi, cut) <= 0 {
		j++
	}
	ja := j
	if j < len(other) && (other[j].lo == nil || bytes.Compare(other[j].lo, cut) < 0) {
		ja = j + 1 // other[j] straddles the cut
	}
	next := succ(cut)
	a = &segment{start: g.start, end: minEnd(g.end, next)}
	a.s[k] = side{subs: clip(big[:m], a.start, a.end), level: g.s[k].level}
	a.s[1-k] = side{subs: clip(other[:ja], a.start, a.end), level: g.s[1-k].level}
	b = &segment{start: maxStart(g.start, next), end: g.end}
	b.s[k] = side{subs: clip(big[m:], b.start, b.end), level: g.s[k].level}
	b.s[1-k] = side{subs: clip(other[j:], b.start, b.end), level: g.s[1-k].level}
	if a.empty() {
		a = nil
	}
	if b.empty() {
		b = nil
	}
	return a, b
}

// empty reports whether g can hold no record: its window is empty or it
// has no subtrees.
func (g *segment) empty() bool {
	if g.start != nil && g.end != nil && bytes.Compare(g.start, g.end) >= 0 {
		return true
	}
	return len(g.s[0].subs) == 0 && len(g.s[1].subs) == 0
}

// clip trims from subs (in key order) the subtrees at either end that do
// not overlap [start, end).
func clip(subs []sub, start, end []byte) []sub {
	for len(subs) > 0 && !overlaps(subs[0].lo, subs[0].hi, start, end) {
		subs = subs[1:]
	}
	for len(subs) > 0 && !overlaps(subs[len(subs)-1].lo, subs[len(subs)-1].hi, start, end) {
		subs = subs[:len(subs)-1]
	}
	return subs
}

// overlaps reports whether some key k with lo < k ≤ hi has start ≤ k < end.
// nil bounds are unbounded.
func overlaps(lo, hi, start, end []byte) bool {
	if start != nil && hi != nil && bytes.Compare(hi, start) < 0 {
		return false
	}
	if end != nil && lo != nil {
		// The least key above lo is lo+"\x00"; it must be below end.
		if bytes.Compare(lo, end) >= 0 {
			return false
		}
		if len(end) == len(lo)+1 && end[len(lo)] == 0 && bytes.Equal(end[:len(lo)], lo) {
			return false
		}
	}
	return true
}

// cmpHi compares two upper bounds, nil being above every key.
func cmpHi(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// succ returns the least key greater than k.
func succ(k []byte) []byte {
	s := make([]byte, len(k)+1)
	copy(s, k)
	return s
}

// minEnd returns the lesser exclusive upper bound, nil being unbounded.
func minEnd(a, b []byte) []byte {
	if cmpHi(a, b) <= 0 {
		return a
	}
	return b
}

// maxStart returns the greater inclusive lower bound, nil being unbounded.
func maxStart(a, b []byte) []byte {
	if a == nil || (b != nil && bytes.Compare(b, a) > 0) {
		return b
	}
	return a
}

// leafCursor walks the entries of one side's loaded leaves.
type leafCursor struct {
	subs []sub
	i, j int // node, entry
}

// peek returns the current entry if it lies below end, skipping entries
// below start.
func (c *leafCursor) peek(start, end []byte) (key []byte, n *node.Node, j int, ok bool) {
	for c.i < len(c.subs) {
		n := c.subs[c.i].n
		if c.j >= n.Len() {
			c.i, c.j = c.i+1, 0
			continue
		}
		k := n.Key(c.j)
		if start != nil && bytes.Compare(k, start) < 0 {
			c.j++
			continue
		}
		if end != nil && bytes.Compare(k, end) >= 0 {
			c.i = len(c.subs)
			return nil, nil, 0, false
		}
		return k, n, c.j, true
	}
	return nil, nil, 0, false
}

func (c *leafCursor) advance() { c.j++ }

// emit yields the changes of a ready segment: a merge walk of both sides'
// leaf entries within its key window.
func (d *differ) emit(g *segment, yield func(Change, error) bool) error {
	var c [2]leafCursor
	c[0].subs, c[1].subs = g.s[0].subs, g.s[1].subs
	for {
		k0, n0, j0, ok0 := c[0].peek(g.start, g.end)
		k1, n1, j1, ok1 := c[1].peek(g.start, g.end)
		var ch Change
		switch cmp := bytes.Compare(k0, k1); {
		case !ok0 && !ok1:
			return nil
		case !ok1 || (ok0 && cmp < 0):
			v := n0.Value(j0)
			ch = Change{Key: k0, Old: &v}
			c[0].advance()
		case !ok0 || cmp > 0:
			v := n1.Value(j1)
			ch = Change{Key: k1, New: &v}
			c[1].advance()
		default:
			c[0].advance()
			c[1].advance()
			// Payload encodings are canonical (Decode rejects any other),
			// so equal payloads are equal values, compared undecoded.
			if bytes.Equal(n0.Payload(j0), n1.Payload(j1)) {
				continue
			}
			vs := [2]node.Value{n0.Value(j0), n1.Value(j1)}
			ch = Change{Key: k0, Old: &vs[0], New: &vs[1]}
		}
		if d.any && bytes.Compare(ch.Key, d.last) <= 0 {
			return fmt.Errorf("diff: key %q after %q: %w: records out of order across nodes", ch.Key, d.last, node.ErrCorrupt)
		}
		d.last, d.any = ch.Key, true
		if !yield(ch, nil) {
			return errStop
		}
	}
}
