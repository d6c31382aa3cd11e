package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/arbor-sync/arbor/node"
)

// A pack is one immutable object in the bucket holding the nodes and
// value blobs of one commit (or of one part of a large commit):
//
//	"ARBORPK1"                          magic, 8 bytes
//	entries                             the raw bytes of each entry, back to back
//	index:
//	  alg (1 byte)                      hash algorithm of every address
//	  uvarint n
//	  n × (kind 1 byte | hash[H] | uvarint offset | uvarint length)
//	footer: uint64 BE index offset | uint32 BE index length | "APK1"
//
// Entries are in the order they were added; an entry's offset and length
// locate its bytes in the object, so one ranged GET reads it. The index is
// also located by the pack's record in etcd, so a server learning of a new
// pack reads its index with one ranged GET.
const (
	packMagic    = "ARBORPK1"
	footerMagic  = "APK1"
	footerSize   = 8 + 4 + 4
	kindNode     = 0
	kindBlob     = 1
	maxPackIndex = 64 << 20 // an index larger than this is refused as corrupt
)

// ErrCorruptPack reports a pack or pack index that does not parse.
var ErrCorruptPack = errors.New("corrupt pack")

// packEntry locates one node or blob in a pack.
type packEntry struct {
	blob bool
	hash node.Hash
	off  uint64
	len  uint64
}

// packWriter accumulates entries into a pack object.
type packWriter struct {
	alg     node.Alg
	buf     []byte
	entries []packEntry
	seen    map[node.Hash]uint8 // kinds added (bit 0 node, bit 1 blob)
}

func newPackWriter(alg node.Alg) *packWriter {
	return &packWriter{alg: alg, buf: []byte(packMagic), seen: map[node.Hash]uint8{}}
}

// add appends an entry unless the pack already holds it.
func (w *packWriter) add(blob bool, h node.Hash, raw []byte) {
	bit := uint8(1)
	if blob {
		bit = 2
	}
	if w.seen[h]&bit != 0 {
		return
	}
	w.seen[h] |= bit
	w.entries = append(w.entries, packEntry{blob: blob, hash: h, off: uint64(len(w.buf)), len: uint64(len(raw))})
	w.buf = append(w.buf, raw...)
}

// size is the pack's size so far, without index and footer.
func (w *packWriter) size() int { return len(w.buf) }

// finish returns the pack's bytes and its index's offset and length.
func (w *packWriter) finish() (pack []byte, indexOff, indexLen uint64) {
	indexOff = uint64(len(w.buf))
	out := appendIndex(w.buf, w.alg, w.entries)
	indexLen = uint64(len(out)) - indexOff
	out = binary.BigEndian.AppendUint64(out, indexOff)
	out = binary.BigEndian.AppendUint32(out, uint32(indexLen))
	out = append(out, footerMagic...)
	return out, indexOff, indexLen
}

func appendIndex(dst []byte, alg node.Alg, es []packEntry) []byte {
	dst = append(dst, byte(alg))
	dst = binary.AppendUvarint(dst, uint64(len(es)))
	for _, e := range es {
		k := byte(kindNode)
		if e.blob {
			k = kindBlob
		}
		dst = append(dst, k)
		dst = alg.Append(dst, e.hash)
		dst = binary.AppendUvarint(dst, e.off)
		dst = binary.AppendUvarint(dst, e.len)
	}
	return dst
}

// decodeIndex parses a pack index read from a pack of packSize bytes whose
// index starts at indexOff. Every entry must lie inside the pack's entry
// area; it never panics on hostile input.
func decodeIndex(alg node.Alg, b []byte, indexOff uint64) ([]packEntry, error) {
	if len(b) > maxPackIndex {
		return nil, fmt.Errorf("%w: index of %d bytes", ErrCorruptPack, len(b))
	}
	if len(b) < 2 || node.Alg(b[0]) != alg {
		return nil, fmt.Errorf("%w: index is not of %s", ErrCorruptPack, alg)
	}
	hs := alg.Size()
	p := b[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, fmt.Errorf("%w: index count", ErrCorruptPack)
	}
	p = p[k:]
	if n > uint64(len(p))/uint64(hs+3) {
		return nil, fmt.Errorf("%w: index claims %d entries in %d bytes", ErrCorruptPack, n, len(p))
	}
	es := make([]packEntry, 0, n)
	for range n {
		if len(p) < 1+hs {
			return nil, fmt.Errorf("%w: index truncated", ErrCorruptPack)
		}
		var e packEntry
		switch p[0] {
		case kindNode:
		case kindBlob:
			e.blob = true
		default:
			return nil, fmt.Errorf("%w: entry kind %d", ErrCorruptPack, p[0])
		}
		h, _ := alg.HashOf(p[1 : 1+hs])
		if h.IsZero() {
			return nil, fmt.Errorf("%w: zero address", ErrCorruptPack)
		}
		e.hash = h
		p = p[1+hs:]
		if e.off, k = binary.Uvarint(p); k <= 0 {
			return nil, fmt.Errorf("%w: entry offset", ErrCorruptPack)
		}
		p = p[k:]
		if e.len, k = binary.Uvarint(p); k <= 0 {
			return nil, fmt.Errorf("%w: entry length", ErrCorruptPack)
		}
		p = p[k:]
		if e.off < uint64(len(packMagic)) || e.off > indexOff || e.len > indexOff-e.off {
			return nil, fmt.Errorf("%w: entry %s at %d+%d outside the pack's %d entry bytes", ErrCorruptPack, e.hash, e.off, e.len, indexOff)
		}
		es = append(es, e)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the index", ErrCorruptPack, len(p))
	}
	return es, nil
}

// decodePack parses a whole pack object: its footer, then its index.
func decodePack(alg node.Alg, b []byte) ([]packEntry, error) {
	if len(b) < len(packMagic)+footerSize || string(b[:len(packMagic)]) != packMagic || string(b[len(b)-4:]) != footerMagic {
		return nil, fmt.Errorf("%w: no pack header or footer", ErrCorruptPack)
	}
	f := b[len(b)-footerSize:]
	off := binary.BigEndian.Uint64(f)
	n := uint64(binary.BigEndian.Uint32(f[8:]))
	end := uint64(len(b) - footerSize)
	if off < uint64(len(packMagic)) || off > end || n != end-off {
		return nil, fmt.Errorf("%w: footer locates the index at %d+%d in %d bytes", ErrCorruptPack, off, n, len(b))
	}
	return decodeIndex(alg, b[off:end], off)
}
