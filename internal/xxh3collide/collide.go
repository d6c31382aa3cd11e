// Package xxh3collide builds xxh3-128 collisions, for the tests that show
// what a hostile tenant can and cannot do with them. It is what an
// attacker needs, in a dozen lines: xxh3 is not collision resistant.
package xxh3collide

import (
	"bytes"
	"encoding/binary"
)

// Bytes 0..7 and 8..15 of xxh3's default secret, little endian: the secret
// words that stripes 0 and 1 of a long input mix into lane 0.
const (
	secret0 uint64 = 0xbe4ba423396cfeb8
	secret8 uint64 = 0x1cad21f72c81017c
)

// Pair returns two different values of n bytes (n > 1024, so both are long
// inputs) with equal xxh3-128, built the way a hostile tenant can: in
// xxh3's long-input loop lane 0 of a stripe adds its data word to one
// accumulator and the product of the halves of data^secret to the other.
// Choosing each data word so that the low half of data^secret is zero
// makes every product zero, and swapping the high halves between stripes 0
// and 1 keeps the sum of the data words. rest (at least n bytes) fills the
// other bytes.
func Pair(n int, rest []byte) (a, b []byte) {
	a = bytes.Clone(rest[:n])
	word := func(secret uint64, hi uint64) uint64 {
		return secret&0xffffffff | ((secret>>32)^hi)<<32
	}
	binary.LittleEndian.PutUint64(a[0:], word(secret0, 1))
	binary.LittleEndian.PutUint64(a[64:], word(secret8, 2))
	b = bytes.Clone(a)
	binary.LittleEndian.PutUint64(b[0:], word(secret0, 2))
	binary.LittleEndian.PutUint64(b[64:], word(secret8, 1))
	return a, b
}
