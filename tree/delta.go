package tree

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/arbor-sync/arbor/node"
)

// Delta storage. A node rewritten by Apply usually differs from the node it
// replaces in one or two entries, yet its encoding is kilobytes. Storing it
// whole makes every scattered update write (and Pebble then compact) a
// whole leaf per changed record. So the store may keep a node as a delta:
// the hash of a node stored whole (its base) and the entries to put or
// delete to turn the base into it.
//
// A delta is physical only. The node's hash is still that of its canonical
// encoding, which reading rebuilds (and checks against the hash), so trees,
// diffs and the wire never see deltas. Invariants:
//   - a delta's base is stored whole (chains are one step long);
//   - a delta is stored only while its base is stored: garbage collection
//     rewrites a live node whole before it deletes a dead base;
//   - a delta is written only if it is at most 1/deltaMaxFraction of the
//     node's encoding, so reading one costs at most about 1.3 node reads of
//     bytes plus the base (which the node cache usually holds).
//
// Stored layout:
//
//	0xDE | level u8 | base hash (the store's hash width) | uvarint n | n × (uvarint klen | key | uvarint plen+1 | payload)
//
// with plen+1 = 0 for a delete, and keys strictly ascending. A whole node
// starts with node.Version, so byte 0 tells the two apart.

const (
	deltaTag = 0xDE
	// deltaMaxFraction bounds a stored delta to 1/deltaMaxFraction of the
	// node's full encoding.
	deltaMaxFraction = 3
)

// deltaOp puts key with payload, or deletes key if payload is nil.
type deltaOp struct {
	key     []byte
	payload []byte
}

// deltaHeader is the size of a delta's tag, level and base hash.
func deltaHeader(alg node.Alg) int { return 2 + alg.Size() }

type delta struct {
	alg   node.Alg
	level int
	base  node.Hash
	ops   []deltaOp
}

func isDelta(raw []byte) bool { return len(raw) > 0 && raw[0] == deltaTag }

func appendDelta(dst []byte, level int, base node.Hash, ops []deltaOp) []byte {
	size := deltaHeader(base.Alg()) + uvarintLen(uint64(len(ops)))
	for _, op := range ops {
		size += opSize(op)
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, deltaTag, byte(level))
	dst = base.Alg().Append(dst, base)
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for _, op := range ops {
		dst = binary.AppendUvarint(dst, uint64(len(op.key)))
		dst = append(dst, op.key...)
		if op.payload == nil {
			dst = binary.AppendUvarint(dst, 0)
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(len(op.payload))+1)
		dst = append(dst, op.payload...)
	}
	return dst
}

// decodeDelta parses a stored delta. The ops alias raw. Malformed input
// gives an error wrapping node.ErrCorrupt, never a panic.
func decodeDelta(alg node.Alg, raw []byte) (delta, error) { return decodeDeltaInto(alg, raw, nil) }

// decodeDeltaInto is decodeDelta appending the ops to ops[:0].
func decodeDeltaInto(alg node.Alg, raw []byte, ops []deltaOp) (delta, error) {
	bad := func(why string) (delta, error) {
		return delta{}, fmt.Errorf("%w: delta: %s", node.ErrCorrupt, why)
	}
	hdr := deltaHeader(alg)
	if !alg.Valid() || len(raw) < hdr+1 || raw[0] != deltaTag {
		return bad("short or untagged")
	}
	d := delta{alg: alg, level: int(raw[1])}
	if d.level > node.MaxLevel {
		return bad("level out of range")
	}
	d.base, _ = alg.HashOf(raw[2:hdr])
	if d.base.IsZero() {
		return bad("zero base")
	}
	p := raw[hdr:]
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p))/2 {
		return bad("bad op count")
	}
	p = p[w:]
	d.ops = slices.Grow(ops[:0], int(n))
	for i := uint64(0); i < n; i++ {
		kl, w := binary.Uvarint(p)
		if w <= 0 || kl > node.MaxKeySize || kl > uint64(len(p)-w) {
			return bad("bad key length")
		}
		key := p[w : w+int(kl) : w+int(kl)]
		p = p[w+int(kl):]
		if len(d.ops) > 0 && bytes.Compare(d.ops[len(d.ops)-1].key, key) >= 0 {
			return bad("keys out of order")
		}
		pl, w := binary.Uvarint(p)
		if w <= 0 || pl > uint64(len(p)-w)+1 {
			return bad("bad payload length")
		}
		op := deltaOp{key: key}
		if pl > 0 {
			op.payload = p[w : w+int(pl-1) : w+int(pl-1)]
			p = p[w+int(pl-1):]
		} else {
			p = p[w:]
		}
		d.ops = append(d.ops, op)
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return d, nil
}

// applyDelta returns the encoding of base with ops applied. It does not
// check the result's hash; callers do.
func applyDelta(base *node.Node, d delta) ([]byte, error) {
	if base.Level() != d.level {
		return nil, fmt.Errorf("%w: delta of level %d on a level-%d base", node.ErrCorrupt, d.level, base.Level())
	}
	ents := make([]node.Entry, 0, base.Len()+len(d.ops))
	a, o := 0, 0
	for a < base.Len() || o < len(d.ops) {
		var cmp int
		switch {
		case o >= len(d.ops):
			cmp = -1
		case a >= base.Len():
			cmp = 1
		default:
			cmp = bytes.Compare(base.Key(a), d.ops[o].key)
		}
		if cmp < 0 {
			ents = append(ents, base.Entry(a))
			a++
			continue
		}
		if cmp == 0 {
			a++
		}
		if op := d.ops[o]; op.payload != nil {
			ents = append(ents, node.Entry{Key: op.key, Payload: op.payload})
		}
		o++
	}
	return node.Encode(d.alg, d.level, ents), nil
}

// diffOps appends to ops[:0] the ops that turn old into next, or returns
// false once their encoding would exceed limit bytes.
func diffOps(ops []deltaOp, old, next *node.Node, limit int) ([]deltaOp, bool) {
	ops = ops[:0]
	size := 0
	add := func(op deltaOp) bool {
		ops = append(ops, op)
		size += opSize(op)
		return size <= limit
	}
	a, e := 0, 0
	for a < old.Len() || e < next.Len() {
		var cmp int
		switch {
		case e >= next.Len():
			cmp = -1
		case a >= old.Len():
			cmp = 1
		default:
			cmp = bytes.Compare(old.Key(a), next.Key(e))
		}
		switch {
		case cmp < 0:
			if !add(deltaOp{key: old.Key(a)}) {
				return nil, false
			}
			a++
		case cmp > 0:
			if !add(deltaOp{key: next.Key(e), payload: next.Payload(e)}) {
				return nil, false
			}
			e++
		default:
			if !bytes.Equal(old.Payload(a), next.Payload(e)) && !add(deltaOp{key: next.Key(e), payload: next.Payload(e)}) {
				return nil, false
			}
			a++
			e++
		}
	}
	return ops, true
}

// composeOps appends to out[:0] the ops of first then second, as one set:
// where both touch a key, second's op wins.
func composeOps(out, first, second []deltaOp) []deltaOp {
	out = out[:0]
	i, j := 0, 0
	for i < len(first) || j < len(second) {
		switch {
		case j >= len(second) || (i < len(first) && bytes.Compare(first[i].key, second[j].key) < 0):
			out = append(out, first[i])
			i++
		case i >= len(first) || bytes.Compare(first[i].key, second[j].key) > 0:
			out = append(out, second[j])
			j++
		default:
			out = append(out, second[j])
			i++
			j++
		}
	}
	return out
}

func opSize(op deltaOp) int {
	return uvarintLen(uint64(len(op.key))) + len(op.key) + uvarintLen(uint64(len(op.payload))+1) + len(op.payload)
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}
