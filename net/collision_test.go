package net

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// xxh3Secret0 and xxh3Secret8 are bytes 0..7 and 8..15 of xxh3's default
// secret, little endian: the secret words stripes 0 and 1 of a long input
// mix into lane 0.
const (
	xxh3Secret0 uint64 = 0xbe4ba423396cfeb8
	xxh3Secret8 uint64 = 0x1cad21f72c81017c
)

// xxh3Collision returns two different values of n bytes (n > 1024, so
// that both are long inputs) with equal node.Sum, built the way a hostile
// tenant can: in xxh3's long-input loop lane 0 of a stripe adds its data
// word to one accumulator and the product of the halves of data^secret to
// the other. Choosing each data word so that the low half of data^secret
// is zero makes every product zero, and swapping the high halves between
// stripes 0 and 1 keeps the sum of the data words. rest fills the other
// bytes.
func xxh3Collision(n int, rest []byte) (a, b []byte) {
	a = bytes.Clone(rest[:n])
	word := func(secret uint64, hi uint64) uint64 {
		return secret&0xffffffff | ((secret>>32)^hi)<<32
	}
	binary.LittleEndian.PutUint64(a[0:], word(xxh3Secret0, 1))
	binary.LittleEndian.PutUint64(a[64:], word(xxh3Secret8, 2))
	b = bytes.Clone(a)
	binary.LittleEndian.PutUint64(b[0:], word(xxh3Secret0, 2))
	binary.LittleEndian.PutUint64(b[64:], word(xxh3Secret8, 1))
	return a, b
}

func TestXXH3CollisionIsReal(t *testing.T) {
	rest := make([]byte, 3000)
	for i := range rest {
		rest[i] = byte(rand.Uint32())
	}
	a, b := xxh3Collision(3000, rest)
	if bytes.Equal(a, b) || node.Sum(a) != node.Sum(b) {
		t.Fatalf("not a collision: equal bytes %v, sums %s %s", bytes.Equal(a, b), node.Sum(a), node.Sum(b))
	}
}

// TestEqualRootsDifferentRecordsWithXXH3 is the "can" row of the threat
// model for xxh3-128: two stores with different records and one root. A
// replica holder (or a server) who chooses values can pass a root
// comparison with other data; only a collision-resistant hash closes this.
func TestEqualRootsDifferentRecordsWithXXH3(t *testing.T) {
	rest := make([]byte, 2048)
	a, b := xxh3Collision(len(rest), rest)
	s1 := openStore(t, t.TempDir(), smallChunks)
	s2 := openStore(t, t.TempDir(), smallChunks)
	r1 := edit(t, s1, tree.Edit{Key: []byte("contract"), Value: a})
	r2 := edit(t, s2, tree.Edit{Key: []byte("contract"), Value: b})
	v1, v2 := get(t, s1, r1, []byte("contract")), get(t, s2, r2, []byte("contract"))
	if r1 != r2 || *v1 == *v2 {
		t.Fatalf("roots %s %s, values equal %v: expected equal roots over different records", r1.Short(), r2.Short(), *v1 == *v2)
	}
}
