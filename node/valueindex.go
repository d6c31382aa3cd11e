package node

import (
	"encoding/binary"
	"fmt"
	"math"
)

// valueIndexMarker is byte 1 of a value index blob. Node levels never reach
// it, so a blob cannot be mistaken for a node.
const valueIndexMarker = 0xFF

// MaxValueSize is the greatest value Arbor stores (1 GiB).
const MaxValueSize = 1 << 30

// Chunk is one content-defined piece of an out-of-line value.
type Chunk struct {
	Hash Hash   // the address of the chunk's bytes
	Size uint32 // the chunk's length
}

// EncodeValueIndex encodes the ordered chunk list of an out-of-line value.
//
// Layout: alg u8 | 0xFF | uvarint n | n × (hash | uvarint size), each hash
// alg.Size() bytes. A value's Ref is the alg.Sum of this encoding.
func EncodeValueIndex(alg Alg, chunks []Chunk) []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(chunks)*(alg.Size()+binary.MaxVarintLen32))
	b = append(b, byte(alg), valueIndexMarker)
	b = binary.AppendUvarint(b, uint64(len(chunks)))
	for _, c := range chunks {
		b = alg.Append(b, c.Hash)
		b = binary.AppendUvarint(b, uint64(c.Size))
	}
	return b
}

// DecodeValueIndex decodes a value index blob of alg and returns its chunks
// and the value's total size. It never panics on malformed input.
func DecodeValueIndex(alg Alg, b []byte) ([]Chunk, uint64, error) {
	hs := alg.Size()
	if hs == 0 || len(b) < 3 || b[0] != byte(alg) || b[1] != valueIndexMarker {
		return nil, 0, fmt.Errorf("%w: not a value index of %s", ErrCorrupt, alg)
	}
	n, w := uvarint(b[2:])
	pos := 2 + w
	if w <= 0 || n == 0 || n > uint64(len(b)-pos)/uint64(hs+1) {
		return nil, 0, fmt.Errorf("%w: bad value index chunk count", ErrCorrupt)
	}
	chunks := make([]Chunk, n)
	var total uint64
	for i := range chunks {
		if len(b)-pos < hs+1 {
			return nil, 0, fmt.Errorf("%w: truncated value index", ErrCorrupt)
		}
		chunks[i].Hash, _ = alg.HashOf(b[pos : pos+hs])
		if chunks[i].Hash.IsZero() {
			return nil, 0, fmt.Errorf("%w: zero chunk address in value index", ErrCorrupt)
		}
		pos += hs
		s, w := uvarint(b[pos:])
		if w <= 0 || s == 0 || s > math.MaxUint32 {
			return nil, 0, fmt.Errorf("%w: bad chunk size in value index", ErrCorrupt)
		}
		pos += w
		chunks[i].Size = uint32(s)
		total += s
		if total > MaxValueSize {
			return nil, 0, fmt.Errorf("%w: value index describes more than %d bytes", ErrCorrupt, MaxValueSize)
		}
	}
	if pos != len(b) {
		return nil, 0, fmt.Errorf("%w: %d trailing bytes in value index", ErrCorrupt, len(b)-pos)
	}
	return chunks, total, nil
}
