package node

import (
	"bytes"
	"testing"
)

// Red-team tests of the hash algorithm byte (node.Alg). Each asserts the
// secure/correct behaviour. A test that names an "Attack" and an "Effect"
// describes the defect it found; every one is fixed and the test guards
// the fix.

// TestRedTeamHashEmptyRootOfAnyAlg
//
// Promise: EmptyRoot(alg) / EmptyLeaf(alg) (and arbor.EmptyRoot, which a
// program calls with an arbor.HashAlg it may have parsed or received) give
// the empty tree of alg. Attack: an Alg that is not valid (0, 3, 255).
// They index a 3-entry table: 3 and up panic (index out of range), and 0
// gives the zero Hash (which "addresses nothing") and a nil leaf, while
// Options.Hash treats 0 as xxh3. An invalid Alg should give the zero Hash /
// nil, or xxh3's, never a panic.
func TestRedTeamHashEmptyRootOfAnyAlg(t *testing.T) {
	for _, a := range []Alg{0, 3, 255} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("EmptyRoot/EmptyLeaf(%d) panics: %v", a, r)
				}
			}()
			_ = EmptyRoot(a)
			_ = EmptyLeaf(a)
		}()
	}
}

// TestRedTeamHashAlgorithmsNeverAlias: decoding never lets bytes of one
// algorithm pass as the other's where an address is inside, zero addresses
// are refused everywhere, and the zero Hash equals no algorithm's. Held.
func TestRedTeamHashAlgorithmsNeverAlias(t *testing.T) {
	for _, a := range Algs {
		o := XXH3
		if a == XXH3 {
			o = BLAKE3
		}
		// A branch of a relabelled as o: child addresses change width, so
		// it must not decode, or decode to a node with another hash.
		child := a.Sum([]byte("child"))
		br := Encode(a, 1, []Entry{{Key: []byte("k"), Payload: AppendChildPayload(nil, child, 3)}})
		rel := append([]byte{byte(o)}, br[1:]...)
		if n, err := Decode(rel); err == nil && n.Hash() == a.Sum(br) {
			t.Errorf("%s branch relabelled %s decodes with the original hash", a, o)
		}
		// A leaf with an out-of-line value, relabelled.
		ref := a.Sum([]byte("index"))
		lf := Encode(a, 0, []Entry{{Key: []byte("k"), Payload: RefValue(ref, 5000).AppendPayload(nil)}})
		if _, err := Decode(lf); err != nil {
			t.Fatal(err)
		}
		if n, err := Decode(append([]byte{byte(o)}, lf[1:]...)); err == nil && n.Len() == 1 && n.Value(0).IsRef && n.Value(0).Ref.Alg() == a {
			t.Errorf("%s leaf relabelled %s keeps an %s reference", a, o, a)
		}
		// Zero addresses.
		zero := make([]byte, a.Size())
		zb := Encode(a, 1, []Entry{{Key: []byte("k"), Payload: append(append([]byte{}, zero...), 1)}})
		if _, err := Decode(zb); err == nil {
			t.Errorf("%s branch with a zero child decodes", a)
		}
		zl := Encode(a, 0, []Entry{{Key: []byte("k"), Payload: append(append([]byte{valueRef}, zero...), 0x88, 0x27)}})
		if _, err := Decode(zl); err == nil {
			t.Errorf("%s leaf with a zero value reference decodes", a)
		}
		zi := append([]byte{byte(a), valueIndexMarker, 1}, zero...)
		zi = append(zi, 0x88, 0x27)
		if _, _, err := DecodeValueIndex(a, zi); err == nil {
			t.Errorf("%s value index with a zero chunk decodes", a)
		}
		// Value index of the other algorithm, or relabelled.
		idx := EncodeValueIndex(a, []Chunk{{Hash: a.Sum([]byte("c")), Size: 5000}})
		if _, _, err := DecodeValueIndex(o, idx); err == nil {
			t.Errorf("%s value index decodes as %s", a, o)
		}
		if _, _, err := DecodeValueIndex(o, append([]byte{byte(o)}, idx[1:]...)); err == nil && a.Size() != o.Size() {
			t.Errorf("%s value index relabelled %s decodes", a, o)
		}
		// Hashes.
		if h, ok := a.HashOf(zero); !ok || !h.IsZero() || h.Alg() != 0 {
			t.Errorf("%s HashOf(zeros) = %v %v", a, h, ok)
		}
		if _, ok := a.HashOf(make([]byte, o.Size())); ok {
			t.Errorf("%s HashOf took %d bytes", a, o.Size())
		}
		s := a.Sum([]byte("x"))
		var ext [MaxHashSize]byte
		copy(ext[:], s.Bytes())
		if h, ok := BLAKE3.HashOf(ext[:]); ok && a == XXH3 && h == s {
			t.Error("an xxh3 hash equals the blake3 hash of its zero-extended bytes")
		}
		p, err := ParseHash(s.String())
		if err != nil || p != s {
			t.Errorf("ParseHash(String) of %s: %v %v", a, p, err)
		}
		if EmptyRoot(a) == EmptyRoot(o) || bytes.Equal(EmptyLeaf(a), EmptyLeaf(o)) {
			t.Error("empty roots of two algorithms coincide")
		}
	}
	for _, b := range [][]byte{{0, 0, 0}, {3, 0, 0}, {0xFF, 0, 0}, {3, 0xFF, 0}} {
		if _, err := Decode(b); err == nil {
			t.Errorf("node % x with an unknown algorithm decodes", b)
		}
	}
	for _, a := range []Alg{0, 3} {
		if _, _, err := DecodeValueIndex(a, []byte{byte(a), valueIndexMarker, 1, 1, 1}); err == nil {
			t.Errorf("value index of algorithm %d decodes", a)
		}
		if _, err := DecodeValue(a, []byte{valueRef, 1, 0x88, 0x27}); err == nil {
			t.Errorf("value reference of algorithm %d decodes", a)
		}
		if _, _, err := DecodeChildPayload(a, []byte{1, 1}); err == nil {
			t.Errorf("child payload of algorithm %d decodes", a)
		}
	}
}
