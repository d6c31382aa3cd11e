package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Format constants. Changing any of them changes every hash. Byte 0 of
// every node and value index is the store's Alg, which fixes the width of
// every address inside it.
const (
	// MaxLevel is the greatest level a node may have. 2^64 records at the
	// smallest fanout need fewer than 64 levels.
	MaxLevel = 63
	// MaxKeySize is the greatest key length in bytes.
	MaxKeySize = 4096
	// MaxInlineValue is the greatest value stored inside a leaf. Larger values
	// are stored out of line as content-defined chunks (see package chunker)
	// and the leaf keeps a reference to their index blob.
	MaxInlineValue = 1024
	// MaxNodeSize bounds an encoded node. The chunker's byte cap keeps real
	// nodes far below it; Decode rejects larger input outright.
	MaxNodeSize = 4 << 20

	valueInline = 0
	valueRef    = 1
)

// Sentinel errors.
var (
	// ErrCorrupt reports bytes that are not a well-formed node, or a node
	// whose bytes do not hash to the address it was fetched by.
	ErrCorrupt = errors.New("corrupt node")
	// ErrNotFound reports a node that a Source does not hold.
	ErrNotFound = errors.New("node not found")
)

// Source fetches decoded nodes by hash. Implementations must be safe for
// concurrent use. Asking for many hashes in one call lets a remote source
// answer them in one round trip.
type Source interface {
	// Nodes returns the nodes for hashes, in the same order. When one is
	// missing it returns an error wrapping ErrNotFound that names it.
	Nodes(ctx context.Context, hashes []Hash) ([]*Node, error)
}

// Value is a leaf value as stored: inline bytes, or a reference to an
// out-of-line value's index blob. Two values are equal exactly when their
// stored forms are equal, because out-of-line chunking is deterministic.
type Value struct {
	// Inline holds the value when IsRef is false.
	Inline []byte
	// Ref is the hash of the value's index blob when IsRef is true.
	Ref Hash
	// Size is the value's length in bytes.
	Size uint64
	// IsRef reports an out-of-line value.
	IsRef bool
}

// InlineValue returns v stored inline. The caller ensures len(v) ≤ MaxInlineValue.
func InlineValue(v []byte) Value { return Value{Inline: v, Size: uint64(len(v))} }

// RefValue returns a reference to an out-of-line value of the given size.
func RefValue(index Hash, size uint64) Value { return Value{Ref: index, Size: size, IsRef: true} }

// Equal reports whether v and o are the same stored value.
func (v Value) Equal(o Value) bool {
	if v.IsRef != o.IsRef {
		return false
	}
	if v.IsRef {
		return v.Ref == o.Ref && v.Size == o.Size
	}
	return bytes.Equal(v.Inline, o.Inline)
}

// AppendPayload appends v's leaf payload encoding to dst.
func (v Value) AppendPayload(dst []byte) []byte {
	if v.IsRef {
		dst = append(dst, valueRef)
		dst = v.Ref.alg.Append(dst, v.Ref)
		return binary.AppendUvarint(dst, v.Size)
	}
	dst = append(dst, valueInline)
	return append(dst, v.Inline...)
}

// DecodeValue decodes a leaf payload of a node of alg. The result aliases p.
func DecodeValue(alg Alg, p []byte) (Value, error) {
	if len(p) == 0 {
		return Value{}, fmt.Errorf("%w: empty leaf payload", ErrCorrupt)
	}
	switch p[0] {
	case valueInline:
		if len(p)-1 > MaxInlineValue {
			return Value{}, fmt.Errorf("%w: inline value of %d bytes exceeds %d", ErrCorrupt, len(p)-1, MaxInlineValue)
		}
		return InlineValue(p[1:]), nil
	case valueRef:
		hs := alg.Size()
		if hs == 0 || len(p) < 1+hs+1 {
			return Value{}, fmt.Errorf("%w: short value reference", ErrCorrupt)
		}
		h, _ := alg.HashOf(p[1 : 1+hs])
		if h.IsZero() {
			return Value{}, fmt.Errorf("%w: zero value reference", ErrCorrupt)
		}
		size, n := uvarint(p[1+hs:])
		if n <= 0 || 1+hs+n != len(p) {
			return Value{}, fmt.Errorf("%w: bad value reference size", ErrCorrupt)
		}
		if size <= MaxInlineValue {
			// A value this small is always inline; a reference would give the
			// same record two encodings and break history independence.
			return Value{}, fmt.Errorf("%w: out-of-line value of only %d bytes", ErrCorrupt, size)
		}
		return RefValue(h, size), nil
	default:
		return Value{}, fmt.Errorf("%w: unknown value kind %d", ErrCorrupt, p[0])
	}
}

// AppendChildPayload appends a branch payload (child hash, subtree count).
func AppendChildPayload(dst []byte, child Hash, count uint64) []byte {
	dst = child.alg.Append(dst, child)
	return binary.AppendUvarint(dst, count)
}

// DecodeChildPayload decodes a branch payload of a node of alg.
func DecodeChildPayload(alg Alg, p []byte) (Hash, uint64, error) {
	hs := alg.Size()
	if hs == 0 || len(p) < hs+1 {
		return Hash{}, 0, fmt.Errorf("%w: short child payload", ErrCorrupt)
	}
	h, _ := alg.HashOf(p[:hs])
	if h.IsZero() {
		return h, 0, fmt.Errorf("%w: zero child address", ErrCorrupt)
	}
	c, n := uvarint(p[hs:])
	if n <= 0 || hs+n != len(p) {
		return h, 0, fmt.Errorf("%w: bad child count", ErrCorrupt)
	}
	if c == 0 {
		return h, 0, fmt.Errorf("%w: child with zero records", ErrCorrupt)
	}
	return h, c, nil
}

// Entry is one encoded entry: a key and its level-specific payload (a leaf
// value from Value.AppendPayload, or a child from AppendChildPayload).
type Entry struct {
	Key     []byte
	Payload []byte
}

// Size is the entry's contribution to an encoded node, without length prefixes.
func (e Entry) Size() int { return len(e.Key) + len(e.Payload) }

// Encode returns the encoding of a node of alg at level with entries, which
// must be sorted by strictly ascending key and whose addresses are of alg.
// Encode does not validate; Decode does.
//
// Layout: alg u8 | level u8 | uvarint n | n × (uvarint klen | key |
// uvarint plen | payload).
func Encode(alg Alg, level int, entries []Entry) []byte {
	// The exact size: make clears the whole capacity, and nodes are
	// encoded on every write.
	size := 2 + uvarintSize(uint64(len(entries)))
	for _, e := range entries {
		size += uvarintSize(uint64(len(e.Key))) + uvarintSize(uint64(len(e.Payload))) + e.Size()
	}
	b := make([]byte, 0, size)
	b = append(b, byte(alg), byte(level))
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.AppendUvarint(b, uint64(len(e.Payload)))
		b = append(b, e.Payload...)
	}
	return b
}

// Build returns the decoded view of Encode(alg, level, entries) without
// parsing it again. Like Encode it trusts entries: sorted, strictly ascending keys
// and well-formed payloads (a branch payload's malformed count counts 0).
// Decode(Build(...).Raw()) gives an equal view.
func Build(alg Alg, level int, entries []Entry) *Node {
	raw := Encode(alg, level, entries)
	nd := &Node{raw: raw, level: level, alg: alg, ents: make([]span, len(entries))}
	_, w := binary.Uvarint(raw[2:])
	pos := 2 + w
	for i, e := range entries {
		k0 := pos + uvarintSize(uint64(len(e.Key)))
		k1 := k0 + len(e.Key)
		p0 := k1 + uvarintSize(uint64(len(e.Payload)))
		p1 := p0 + len(e.Payload)
		nd.ents[i] = span{uint32(k0), uint32(k1), uint32(p0), uint32(p1)}
		pos = p1
		if level == 0 {
			nd.count++
			if len(e.Payload) > 0 && e.Payload[0] == valueRef {
				nd.refs++
			}
		} else if _, c, err := DecodeChildPayload(alg, e.Payload); err == nil {
			nd.count += c
		}
	}
	nd.hash = alg.Sum(raw)
	return nd
}

func uvarintSize(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

var emptyLeaf, emptyRoot = func() (l [3][]byte, r [3]Hash) {
	for _, a := range Algs {
		l[a] = Encode(a, 0, nil)
		r[a] = a.Sum(l[a])
	}
	return l, r
}()

// EmptyLeaf returns the encoding of alg's empty tree: a leaf with no
// entries (nil for an invalid Alg). Callers must not modify it.
func EmptyLeaf(alg Alg) []byte {
	if !alg.Valid() {
		return nil
	}
	return emptyLeaf[alg]
}

// EmptyRoot returns the root hash of alg's empty tree (the zero Hash for an
// invalid Alg).
func EmptyRoot(alg Alg) Hash {
	if !alg.Valid() {
		return Hash{}
	}
	return emptyRoot[alg]
}

type span struct{ k0, k1, p0, p1 uint32 }

// Node is a decoded, read-only view of an encoded node. It aliases the
// bytes it was decoded from. A Node is safe for concurrent reads.
type Node struct {
	raw   []byte
	level int
	ents  []span
	count uint64
	refs  int  // values stored out of line (leaves)
	alg   Alg  // raw[0]
	hash  Hash // alg.Sum(raw), computed once by Decode or Build
}

// Decode validates b and returns a view of it, hashing b once for Hash. It
// never panics; malformed input gives an error wrapping ErrCorrupt.
func Decode(b []byte) (*Node, error) { return decode(b, nil) }

// A Decoder decodes like Decode, but takes each node's struct and entry
// table from larger blocks it allocates, one per some hundreds of nodes:
// for a stream of nodes, far fewer allocations. A node keeps its block
// alive, so a Decoder suits nodes that are dropped about together, or kept
// as a Clone (which copies). The zero value is ready; it is not safe for
// concurrent use.
type Decoder struct {
	nodes []Node
	spans []span
}

// decoderBlock is how many entries one block of a Decoder holds (64 KiB).
const decoderBlock = 4096

// Decode is Decode, allocating from d; a nil d allocates as Decode does.
func (d *Decoder) Decode(b []byte) (*Node, error) { return decode(b, d) }

func (d *Decoder) alloc(n int) (*Node, []span) {
	if len(d.nodes) == 0 {
		d.nodes = make([]Node, decoderBlock/16)
	}
	nd := &d.nodes[0]
	d.nodes = d.nodes[1:]
	if n == 0 {
		return nd, []span{} // as Decode's: empty, not nil
	}
	if n > len(d.spans) {
		if n > decoderBlock/4 {
			return nd, make([]span, n) // a large node: a block would hold few
		}
		d.spans = make([]span, decoderBlock)
	}
	ents := d.spans[:n:n]
	d.spans = d.spans[n:]
	return nd, ents
}

func decode(b []byte, d *Decoder) (*Node, error) {
	if len(b) > MaxNodeSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte node limit", ErrCorrupt, len(b), MaxNodeSize)
	}
	if len(b) < 3 {
		return nil, fmt.Errorf("%w: %d bytes is too short for a node", ErrCorrupt, len(b))
	}
	alg := Alg(b[0])
	if !alg.Valid() {
		return nil, fmt.Errorf("%w: unknown format (hash algorithm %d)", ErrCorrupt, b[0])
	}
	level := int(b[1])
	if level > MaxLevel {
		return nil, fmt.Errorf("%w: level %d exceeds %d", ErrCorrupt, level, MaxLevel)
	}
	n, w := uvarint(b[2:])
	if w <= 0 {
		return nil, fmt.Errorf("%w: bad entry count", ErrCorrupt)
	}
	pos := 2 + w
	// Every entry takes at least 3 bytes; reject absurd counts before allocating.
	if n > uint64(len(b)-pos)/3 {
		return nil, fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrCorrupt, n, len(b))
	}
	if level > 0 && n == 0 {
		return nil, fmt.Errorf("%w: empty branch", ErrCorrupt)
	}
	var nd *Node
	if d != nil {
		var ents []span
		nd, ents = d.alloc(int(n))
		*nd = Node{raw: b, level: level, alg: alg, ents: ents}
	} else {
		nd = &Node{raw: b, level: level, alg: alg, ents: make([]span, n)}
	}
	var prev []byte
	for i := range nd.ents {
		kl, w := uvarint(b[pos:])
		if w <= 0 || kl == 0 || kl > MaxKeySize || kl > uint64(len(b)-pos-w) {
			return nil, fmt.Errorf("%w: entry %d: bad key length", ErrCorrupt, i)
		}
		k0 := pos + w
		k1 := k0 + int(kl)
		pl, w := uvarint(b[k1:])
		if w <= 0 || pl > uint64(len(b)-k1-w) {
			return nil, fmt.Errorf("%w: entry %d: bad payload length", ErrCorrupt, i)
		}
		p0 := k1 + w
		p1 := p0 + int(pl)
		key := b[k0:k1]
		if i > 0 && bytes.Compare(prev, key) >= 0 {
			return nil, fmt.Errorf("%w: entry %d: keys out of order", ErrCorrupt, i)
		}
		prev = key
		if level == 0 {
			// Inline values, the common case, need only their length checked.
			if pl == 0 || b[p0] != valueInline || pl-1 > MaxInlineValue {
				v, err := DecodeValue(alg, b[p0:p1])
				if err != nil {
					return nil, fmt.Errorf("entry %d: %w", i, err)
				}
				if v.IsRef {
					nd.refs++
				}
			}
			nd.count++
		} else {
			_, c, err := DecodeChildPayload(alg, b[p0:p1])
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			if c > math.MaxUint64-nd.count {
				return nil, fmt.Errorf("%w: record count overflows", ErrCorrupt)
			}
			nd.count += c
		}
		nd.ents[i] = span{uint32(k0), uint32(k1), uint32(p0), uint32(p1)}
		pos = p1
	}
	if pos != len(b) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(b)-pos)
	}
	nd.hash = alg.Sum(b)
	return nd, nil
}

// uvarint is binary.Uvarint restricted to minimal encodings: it returns
// n ≤ 0 for a varint padded with trailing 0x80 bytes (such as 0x80 0x00 for
// zero). Accepting padded varints would give one node many encodings, hence
// many hashes, and break the rule that re-encoding a decoded node
// reproduces its bytes.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return v, n
}

// Clone returns a copy of n that owns its bytes and entry table: for keeping
// a node that was decoded from a larger buffer, or by a Decoder, without
// keeping the whole buffer or the Decoder's block.
func (n *Node) Clone() *Node {
	c := *n
	c.raw = bytes.Clone(n.raw)
	c.ents = slices.Clone(n.ents) // n's may lie in a Decoder's block
	return &c
}

// Refs returns how many of a leaf's values are stored out of line, as value
// blobs (0 for a branch): a leaf without any needs no blob lookups.
func (n *Node) Refs() int { return n.refs }

// Raw returns the node's encoded bytes. Callers must not modify them.
func (n *Node) Raw() []byte { return n.raw }

// Hash returns the node's address, Alg().Sum(Raw()), hashed once when the
// node was decoded or built.
func (n *Node) Hash() Hash { return n.hash }

// Alg returns the hash algorithm of the node's address and of every
// address inside it.
func (n *Node) Alg() Alg { return n.alg }

// Level returns 0 for a leaf and the height above the leaves for a branch.
func (n *Node) Level() int { return n.level }

// IsLeaf reports whether n is a leaf.
func (n *Node) IsLeaf() bool { return n.level == 0 }

// Len returns the number of entries.
func (n *Node) Len() int { return len(n.ents) }

// Count returns the number of records stored under n.
func (n *Node) Count() uint64 { return n.count }

// Key returns entry i's key (for a branch, the greatest key under child i).
func (n *Node) Key(i int) []byte { s := n.ents[i]; return n.raw[s.k0:s.k1:s.k1] }

// Payload returns entry i's encoded payload.
func (n *Node) Payload(i int) []byte { s := n.ents[i]; return n.raw[s.p0:s.p1:s.p1] }

// Entry returns entry i, aliasing the node's bytes.
func (n *Node) Entry(i int) Entry { return Entry{Key: n.Key(i), Payload: n.Payload(i)} }

// LastKey returns the greatest key in n, or nil if n is empty.
func (n *Node) LastKey() []byte {
	if len(n.ents) == 0 {
		return nil
	}
	return n.Key(len(n.ents) - 1)
}

// Value returns leaf entry i's value. It panics if n is a branch.
func (n *Node) Value(i int) Value {
	if n.level != 0 {
		panic("node: Value called on a branch")
	}
	v, _ := DecodeValue(n.alg, n.Payload(i)) // validated by Decode
	return v
}

// Child returns branch entry i's child hash and subtree record count. It
// panics if n is a leaf.
func (n *Node) Child(i int) (Hash, uint64) {
	if n.level == 0 {
		panic("node: Child called on a leaf")
	}
	h, c, _ := DecodeChildPayload(n.alg, n.Payload(i)) // validated by Decode
	return h, c
}

// Search returns the index of the first entry whose key is ≥ key, or Len()
// if there is none. In a branch, that entry's child is where key belongs.
func (n *Node) Search(key []byte) int {
	return sort.Search(len(n.ents), func(i int) bool { return bytes.Compare(n.Key(i), key) >= 0 })
}

// FindInLeaf returns key's value in the encoded leaf b without decoding the
// whole leaf: it parses entries from the first until one's key is ≥ key,
// checking each as Decode does (lengths, minimal varints, ascending keys)
// and the found entry's payload, and allocates nothing. found reports
// whether b holds key; the value aliases b. It does not check the entries
// after the one it stops at, nor hash b: a caller that read b under an
// address checks the address (b's hash) first, and so gets the node its
// writer stored, whose every entry Decode checked when it was built or
// received. Malformed bytes on its way give an error wrapping ErrCorrupt;
// it never panics.
func FindInLeaf(b, key []byte) (v Value, found bool, err error) {
	if len(b) > MaxNodeSize || len(b) < 3 {
		return Value{}, false, fmt.Errorf("%w: %d bytes is not a node", ErrCorrupt, len(b))
	}
	alg := Alg(b[0])
	if !alg.Valid() {
		return Value{}, false, fmt.Errorf("%w: unknown format (hash algorithm %d)", ErrCorrupt, b[0])
	}
	if b[1] != 0 {
		return Value{}, false, fmt.Errorf("%w: level %d where a leaf was expected", ErrCorrupt, b[1])
	}
	n, w := uvarint(b[2:])
	if w <= 0 {
		return Value{}, false, fmt.Errorf("%w: bad entry count", ErrCorrupt)
	}
	pos := 2 + w
	if n > uint64(len(b)-pos)/3 {
		return Value{}, false, fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrCorrupt, n, len(b))
	}
	var prev []byte
	for i := uint64(0); i < n; i++ {
		kl, w := uvarint(b[pos:])
		if w <= 0 || kl == 0 || kl > MaxKeySize || kl > uint64(len(b)-pos-w) {
			return Value{}, false, fmt.Errorf("%w: entry %d: bad key length", ErrCorrupt, i)
		}
		k0 := pos + w
		k1 := k0 + int(kl)
		pl, w := uvarint(b[k1:])
		if w <= 0 || pl > uint64(len(b)-k1-w) {
			return Value{}, false, fmt.Errorf("%w: entry %d: bad payload length", ErrCorrupt, i)
		}
		p0 := k1 + w
		p1 := p0 + int(pl)
		k := b[k0:k1]
		if i > 0 && bytes.Compare(prev, k) >= 0 {
			return Value{}, false, fmt.Errorf("%w: entry %d: keys out of order", ErrCorrupt, i)
		}
		prev = k
		if c := bytes.Compare(k, key); c >= 0 {
			if c > 0 {
				return Value{}, false, nil
			}
			v, err := DecodeValue(alg, b[p0:p1:p1])
			if err != nil {
				return Value{}, false, fmt.Errorf("entry %d: %w", i, err)
			}
			return v, true, nil
		}
		pos = p1
	}
	if n == 0 && pos != len(b) {
		return Value{}, false, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(b)-pos)
	}
	return Value{}, false, nil
}
