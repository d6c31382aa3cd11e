package node

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"
)

// Alg names the hash function that addresses a store's nodes and blobs. A
// store's algorithm is fixed when the store is created; byte 0 of every node
// and value index names it, so a node of one algorithm never decodes as a
// node of another.
type Alg uint8

const (
	// XXH3 is xxh3-128: the default, and the fastest. It is not a
	// cryptographic hash: anyone who chooses the bytes can build two contents
	// with one address. The right choice inside one trust domain.
	XXH3 Alg = 1
	// BLAKE3 is BLAKE3 with a 256-bit output: a cryptographic hash, for
	// stores whose writers do not trust each other.
	BLAKE3 Alg = 2
)

// MaxHashSize is the size in bytes of the widest Hash.
const MaxHashSize = 32

// Algs lists the supported algorithms.
var Algs = []Alg{XXH3, BLAKE3}

// Size returns the width of a's addresses in bytes (0 for an unknown Alg).
func (a Alg) Size() int {
	switch a {
	case XXH3:
		return 16
	case BLAKE3:
		return 32
	}
	return 0
}

// Valid reports whether a is a supported algorithm.
func (a Alg) Valid() bool { return a.Size() != 0 }

// String returns the algorithm's name: "xxh3-128" or "blake3-256".
func (a Alg) String() string {
	switch a {
	case XXH3:
		return "xxh3-128"
	case BLAKE3:
		return "blake3-256"
	}
	return fmt.Sprintf("hash-%d", uint8(a))
}

// ParseAlg parses an algorithm name: "xxh3" or "xxh3-128", "blake3" or
// "blake3-256" (case does not matter).
func ParseAlg(s string) (Alg, error) {
	switch strings.ToLower(s) {
	case "xxh3", "xxh3-128":
		return XXH3, nil
	case "blake3", "blake3-256":
		return BLAKE3, nil
	}
	return 0, fmt.Errorf("node: unknown hash %q (want xxh3 or blake3)", s)
}

// Sum returns the address of b under a. It panics for an invalid Alg, which
// is a programming error: every Alg reaching it was validated when its
// store was opened or its handshake read.
func (a Alg) Sum(b []byte) Hash {
	var h Hash
	switch a {
	case XXH3:
		s := xxh3.Hash128(b).Bytes()
		copy(h.b[:], s[:])
	case BLAKE3:
		h.b = blake3.Sum256(b)
	default:
		panic(fmt.Sprintf("node: Sum with invalid hash algorithm %d", a))
	}
	h.alg = a
	return h
}

// HashOf returns the Hash of a whose bytes are b, or false when b is not
// a.Size() bytes long. All-zero bytes give the zero Hash.
func (a Alg) HashOf(b []byte) (Hash, bool) {
	var h Hash
	if n := a.Size(); n == 0 || len(b) != n {
		return h, false
	}
	copy(h.b[:], b)
	if h.b != ([MaxHashSize]byte{}) {
		h.alg = a
	}
	return h, true
}

// Append appends h to dst in a's width: exactly a.Size() bytes, zeros for
// the zero Hash.
func (a Alg) Append(dst []byte, h Hash) []byte { return append(dst, h.b[:a.Size()]...) }

// Hash is the address of a node or blob: the hash of its bytes under its
// store's Alg, which it carries. Hashes of different algorithms are never
// equal. The zero Hash addresses nothing.
type Hash struct {
	b   [MaxHashSize]byte // big endian; bytes past the Alg's width are zero
	alg Alg
}

// Alg returns the algorithm h was computed with (0 for the zero Hash).
func (h Hash) Alg() Alg { return h.alg }

// Bytes returns h's bytes in its algorithm's width (empty for the zero Hash).
func (h Hash) Bytes() []byte { return append([]byte(nil), h.b[:h.alg.Size()]...) }

// IsZero reports whether h is the zero Hash, which addresses nothing.
func (h Hash) IsZero() bool { return h == Hash{} }

// String returns h as lowercase hex digits: 32 for xxh3-128, 64 for
// blake3-256 (32 zeros for the zero Hash, which ParseHash reads back).
func (h Hash) String() string {
	if h.alg == 0 {
		return hex.EncodeToString(h.b[:XXH3.Size()])
	}
	return hex.EncodeToString(h.b[:h.alg.Size()])
}

// Short returns the first 12 hex digits of h, for logs and human output.
func (h Hash) Short() string { return hex.EncodeToString(h.b[:6]) }

// MarshalText implements encoding.TextMarshaler (hex), so a Hash is a JSON string.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ParseHash parses hex digits into a Hash: 32 digits are an xxh3-128
// address, 64 a blake3-256 one.
func ParseHash(s string) (Hash, error) {
	var raw [MaxHashSize]byte
	for _, a := range Algs {
		if len(s) != 2*a.Size() {
			continue
		}
		if _, err := hex.Decode(raw[:a.Size()], []byte(s)); err != nil {
			return Hash{}, fmt.Errorf("node: parse hash %q: %w", s, err)
		}
		h, _ := a.HashOf(raw[:a.Size()])
		return h, nil
	}
	return Hash{}, fmt.Errorf("node: parse hash %q: want 32 (xxh3-128) or 64 (blake3-256) hex digits, got %d", s, len(s))
}

// Compare orders hashes by their bytes (then by algorithm), as their
// stored keys sort: -1, 0 or +1.
func (h Hash) Compare(o Hash) int {
	if c := bytes.Compare(h.b[:], o.b[:]); c != 0 {
		return c
	}
	return cmp.Compare(h.alg, o.alg)
}
