package node

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// seedNodes returns valid encodings that cover every payload kind: the
// empty leaf, leaves with inline values (empty, small, maximal), a leaf with
// out-of-line value references, and branches with small and large counts.
func seedNodes() [][]byte {
	var out [][]byte
	for _, alg := range Algs {
		out = append(out, seedNodesOf(alg)...)
	}
	return out
}

func seedNodesOf(alg Alg) [][]byte {
	h := alg.Sum([]byte("child"))
	big := bytes.Repeat([]byte{'v'}, MaxInlineValue)
	return [][]byte{
		EmptyLeaf(alg),
		Encode(alg, 0, []Entry{{Key: []byte("a"), Payload: InlineValue(nil).AppendPayload(nil)}}),
		Encode(alg, 0, []Entry{
			{Key: []byte("apple"), Payload: InlineValue([]byte("red")).AppendPayload(nil)},
			{Key: []byte("banana"), Payload: InlineValue(big).AppendPayload(nil)},
			{Key: []byte("cherry"), Payload: RefValue(h, MaxInlineValue+1).AppendPayload(nil)},
			{Key: []byte("date"), Payload: RefValue(alg.Sum([]byte("x")), 1<<29).AppendPayload(nil)},
		}),
		Encode(alg, 1, []Entry{{Key: []byte("k"), Payload: AppendChildPayload(nil, h, 1)}}),
		Encode(alg, 3, []Entry{
			{Key: []byte("m"), Payload: AppendChildPayload(nil, h, 300)},
			{Key: []byte("m\x00"), Payload: AppendChildPayload(nil, alg.Sum([]byte("y")), 1<<40)},
			{Key: bytes.Repeat([]byte{0xff}, MaxKeySize), Payload: AppendChildPayload(nil, h, 7)},
		}),
	}
}

// checkDecoded asserts what must hold of any input that Decode accepts.
func checkDecoded(t *testing.T, data []byte, n *Node) {
	t.Helper()
	if !bytes.Equal(n.Raw(), data) {
		t.Fatalf("Raw differs from input")
	}
	ents := make([]Entry, n.Len())
	var count uint64
	var refs int
	for i := range ents {
		ents[i] = n.Entry(i)
		if len(ents[i].Key) == 0 || len(ents[i].Key) > MaxKeySize {
			t.Fatalf("entry %d: key of %d bytes accepted", i, len(ents[i].Key))
		}
		if i > 0 && bytes.Compare(ents[i-1].Key, ents[i].Key) >= 0 {
			t.Fatalf("entry %d: keys out of order accepted", i)
		}
		if n.IsLeaf() {
			v := n.Value(i)
			if got := v.AppendPayload(nil); !bytes.Equal(got, ents[i].Payload) {
				t.Fatalf("entry %d: value re-encodes as %x, stored %x", i, got, ents[i].Payload)
			}
			count++
			if v.IsRef {
				refs++
			}
		} else {
			h, c := n.Child(i)
			if got := AppendChildPayload(nil, h, c); !bytes.Equal(got, ents[i].Payload) {
				t.Fatalf("entry %d: child re-encodes as %x, stored %x", i, got, ents[i].Payload)
			}
			if c == 0 {
				t.Fatalf("entry %d: zero count accepted", i)
			}
			count += c
		}
	}
	if count != n.Count() {
		t.Fatalf("Count = %d, entries sum to %d", n.Count(), count)
	}
	if refs != n.Refs() {
		t.Fatalf("Refs = %d, entries hold %d references", n.Refs(), refs)
	}
	if got := Encode(n.Alg(), n.Level(), ents); !bytes.Equal(got, data) {
		t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, data)
	}
	if n.Hash() != n.Alg().Sum(data) {
		t.Fatalf("Hash differs from Sum of the input")
	}
	for i := 0; i < n.Len(); i++ {
		if got := n.Search(n.Key(i)); got != i {
			t.Fatalf("Search(Key(%d)) = %d", i, got)
		}
	}
	if n.Len() > 0 && !bytes.Equal(n.LastKey(), n.Key(n.Len()-1)) {
		t.Fatalf("LastKey differs from the last entry's key")
	}
}

// checkSearch asserts that Search(key) is the first entry ≥ key.
func checkSearch(t *testing.T, n *Node, key []byte) {
	t.Helper()
	i := n.Search(key)
	if i < 0 || i > n.Len() {
		t.Fatalf("Search(%q) = %d outside [0, %d]", key, i, n.Len())
	}
	if i < n.Len() && bytes.Compare(n.Key(i), key) < 0 {
		t.Fatalf("Search(%q) = %d, whose key %q is smaller", key, i, n.Key(i))
	}
	if i > 0 && bytes.Compare(n.Key(i-1), key) >= 0 {
		t.Fatalf("Search(%q) = %d, but key %d (%q) is already ≥", key, i, i-1, n.Key(i-1))
	}
}

// FuzzDecode feeds arbitrary bytes to Decode. It must never panic; every
// error must wrap ErrCorrupt; every accepted input must re-encode to itself
// (so a node has exactly one encoding, hence one hash) and search
// consistently.
func FuzzDecode(f *testing.F) {
	for _, b := range seedNodes() {
		f.Add(b, []byte("banana"))
	}
	f.Add([]byte{byte(XXH3), 0, 0x80, 0x00}, []byte("a")) // padded varint count
	f.Fuzz(func(t *testing.T, data, key []byte) {
		n, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if n != nil {
				t.Fatalf("non-nil node with error")
			}
			return
		}
		checkDecoded(t, data, n)
		checkSearch(t, n, key)
		ents := make([]Entry, n.Len())
		for i := range ents {
			ents[i] = n.Entry(i)
		}
		if b := Build(n.Alg(), n.Level(), ents); !reflect.DeepEqual(b, n) {
			t.Fatalf("Build gives %+v, Decode %+v", b, n)
		}
		// A Decoder part-way through a block decodes the same.
		var d Decoder
		if _, err := d.Decode(seedNodes()[0]); err != nil {
			t.Fatal(err)
		}
		if dn, err := d.Decode(data); err != nil || !reflect.DeepEqual(dn, n) {
			t.Fatalf("Decoder gives %+v, %v; Decode %+v", dn, err, n)
		}
	})
}

// seedValueIndexes returns valid value index encodings.
func seedValueIndexes() [][]byte {
	var out [][]byte
	for _, alg := range Algs {
		out = append(out,
			EncodeValueIndex(alg, []Chunk{{Hash: alg.Sum([]byte("a")), Size: 1}}),
			EncodeValueIndex(alg, []Chunk{
				{Hash: alg.Sum([]byte("a")), Size: 4096},
				{Hash: alg.Sum([]byte("b")), Size: 65536},
				{Hash: alg.Sum([]byte("c")), Size: 17},
			}),
		)
	}
	return out
}

// FuzzDecodeValueIndex feeds arbitrary bytes to DecodeValueIndex: it must
// never panic, errors must wrap ErrCorrupt, and accepted input must
// re-encode to itself with a total equal to the sum of its chunk sizes.
func FuzzDecodeValueIndex(f *testing.F) {
	for _, b := range seedValueIndexes() {
		f.Add(b)
	}
	f.Add([]byte{byte(XXH3), 0xFF, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		alg := XXH3
		if len(data) > 0 {
			alg = Alg(data[0])
		}
		chunks, total, err := DecodeValueIndex(alg, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(chunks) == 0 {
			t.Fatalf("accepted an index with no chunks")
		}
		var sum uint64
		for i, c := range chunks {
			if c.Size == 0 {
				t.Fatalf("chunk %d: zero size accepted", i)
			}
			sum += uint64(c.Size)
		}
		if sum != total || total > MaxValueSize {
			t.Fatalf("total %d, chunks sum to %d (limit %d)", total, sum, MaxValueSize)
		}
		if got := EncodeValueIndex(alg, chunks); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, data)
		}
		if _, err := Decode(data); err == nil {
			t.Fatalf("a value index also decodes as a node")
		}
	})
}

// TestSeedsDecode checks that every fuzz seed is accepted, so the fuzzers
// start from valid encodings.
func TestSeedsDecode(t *testing.T) {
	for i, b := range seedNodes() {
		n, err := Decode(b)
		if err != nil {
			t.Fatalf("seed node %d: %v", i, err)
		}
		checkDecoded(t, b, n)
	}
	for i, b := range seedValueIndexes() {
		if _, _, err := DecodeValueIndex(Alg(b[0]), b); err != nil {
			t.Fatalf("seed index %d: %v", i, err)
		}
	}
}

func ExampleDecode() {
	b := Encode(XXH3, 0, []Entry{
		{Key: []byte("a"), Payload: InlineValue([]byte("1")).AppendPayload(nil)},
		{Key: []byte("b"), Payload: InlineValue([]byte("2")).AppendPayload(nil)},
	})
	n, err := Decode(b)
	if err != nil {
		panic(err)
	}
	fmt.Println(n.Len(), n.Count(), string(n.Value(n.Search([]byte("b"))).Inline))
	// Output: 2 2 2
}

// FuzzFindInLeaf feeds arbitrary bytes and keys to FindInLeaf. It must never
// panic, its errors must wrap ErrCorrupt, and on every leaf Decode accepts
// it must answer as Decode and Search do, without error.
func FuzzFindInLeaf(f *testing.F) {
	for _, b := range seedNodes() {
		f.Add(b, []byte("banana"))
		if n, err := Decode(b); err == nil && n.Len() > 0 {
			f.Add(b, bytes.Clone(n.Key(0)))
			f.Add(b, bytes.Clone(n.LastKey()))
		}
	}
	f.Fuzz(func(t *testing.T, data, key []byte) {
		v, found, err := FindInLeaf(data, key)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		n, derr := Decode(data)
		if derr != nil || !n.IsLeaf() {
			return
		}
		if err != nil {
			t.Fatalf("FindInLeaf: %v on a leaf Decode accepts", err)
		}
		i := n.Search(key)
		want := i < n.Len() && bytes.Equal(n.Key(i), key)
		if found != want {
			t.Fatalf("found %v, Decode and Search say %v", found, want)
		}
		if found && !v.Equal(n.Value(i)) {
			t.Fatalf("value %+v, Decode says %+v", v, n.Value(i))
		}
	})
}
