package node

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/xxh3"
)

// HashSize is the size in bytes of a Hash.
const HashSize = 16

// Hash is the address of a node or blob: the xxh3-128 of its bytes, big endian.
type Hash [HashSize]byte

// Sum returns the Hash of b.
func Sum(b []byte) Hash {
	return Hash(xxh3.Hash128(b).Bytes())
}

// IsZero reports whether h is the zero Hash, which addresses nothing.
func (h Hash) IsZero() bool { return h == Hash{} }

// String returns h as 32 lowercase hex digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short returns the first 12 hex digits of h, for logs and human output.
func (h Hash) Short() string { return hex.EncodeToString(h[:6]) }

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

// ParseHash parses 32 hex digits into a Hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*HashSize {
		return h, fmt.Errorf("node: parse hash %q: want %d hex digits, got %d", s, 2*HashSize, len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("node: parse hash %q: %w", s, err)
	}
	return h, nil
}
