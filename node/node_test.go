package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func leafEntry(k, v string) Entry {
	return Entry{Key: []byte(k), Payload: InlineValue([]byte(v)).AppendPayload(nil)}
}

func childEntry(k string, c uint64) Entry {
	return Entry{Key: []byte(k), Payload: AppendChildPayload(nil, XXH3.Sum([]byte(k)), c)}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestHashTextRoundTrip(t *testing.T) {
	for _, h := range []Hash{{}, XXH3.Sum(nil), XXH3.Sum([]byte("arbor")), EmptyRoot(XXH3),
		BLAKE3.Sum(nil), BLAKE3.Sum([]byte("arbor")), EmptyRoot(BLAKE3)} {
		s := h.String()
		width := max(h.Alg().Size(), XXH3.Size())
		if len(s) != 2*width || strings.ToLower(s) != s {
			t.Fatalf("String() = %q, want %d lowercase hex digits", s, 2*width)
		}
		if !strings.HasPrefix(s, h.Short()) || len(h.Short()) != 12 {
			t.Fatalf("Short() = %q, not the 12-digit prefix of %q", h.Short(), s)
		}
		p, err := ParseHash(s)
		if err != nil || p != h {
			t.Fatalf("ParseHash(%q) = %s, %v", s, p, err)
		}
		if p, err := ParseHash(strings.ToUpper(s)); err != nil || p != h {
			t.Fatalf("ParseHash(upper %q) = %s, %v", s, p, err)
		}
		j, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		var back Hash
		if err := json.Unmarshal(j, &back); err != nil || back != h {
			t.Fatalf("JSON round trip of %s gives %s, %v", h, back, err)
		}
		if h.IsZero() != (h == Hash{}) {
			t.Fatalf("IsZero(%s) = %v", h, h.IsZero())
		}
	}
}

func TestParseHashErrors(t *testing.T) {
	good := XXH3.Sum([]byte("x")).String()
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"short", good[:31]},
		{"long", good + "0"},
		{"non-hex", "g" + good[1:]},
		{"space", " " + good[1:]},
		{"sign", "-" + good[1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := ParseHash(tc.in); err == nil {
				t.Fatalf("ParseHash(%q) = %s, want an error", tc.in, h)
			}
			var h Hash
			if err := h.UnmarshalText([]byte(tc.in)); err == nil {
				t.Fatalf("UnmarshalText(%q) accepted", tc.in)
			}
		})
	}
}

func TestSumIsXXH3BigEndian(t *testing.T) {
	// A fixed vector: changing the hash function or its byte order changes
	// every address, which must come with a format version bump.
	const want = "99aa06d3014798d86001c324468d497f" // xxh3-128 of "" (big endian)
	if got := XXH3.Sum(nil).String(); got != want {
		t.Fatalf("XXH3.Sum(nil) = %s, want %s", got, want)
	}
	if EmptyRoot(XXH3) != XXH3.Sum([]byte{byte(XXH3), 0, 0}) {
		t.Fatalf("EmptyRoot(XXH3) is not the hash of the empty leaf")
	}
}

func TestSumIsBLAKE3(t *testing.T) {
	// The published BLAKE3 test vector for the empty input.
	const want = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := BLAKE3.Sum(nil).String(); got != want {
		t.Fatalf("BLAKE3.Sum(nil) = %s, want %s", got, want)
	}
	if EmptyRoot(BLAKE3) != BLAKE3.Sum([]byte{byte(BLAKE3), 0, 0}) {
		t.Fatalf("EmptyRoot(BLAKE3) is not the hash of the empty leaf")
	}
}

// TestAlgorithmsDoNotMix: a hash of one algorithm never equals one of
// another, even with equal leading bytes, and a node's byte 0 fixes the
// width of every address inside it.
func TestAlgorithmsDoNotMix(t *testing.T) {
	x, b := XXH3.Sum([]byte("k")), BLAKE3.Sum([]byte("k"))
	if x == b || x.Alg() != XXH3 || b.Alg() != BLAKE3 {
		t.Fatalf("hashes of different algorithms compare equal or lost their algorithm")
	}
	trunc, _ := XXH3.HashOf(b.Bytes()[:16])
	if trunc == b {
		t.Fatalf("an xxh3 hash equals the blake3 hash it was cut from")
	}
	for _, alg := range Algs {
		child := alg.Sum([]byte("child"))
		ref := alg.Sum([]byte("index"))
		leaf := Encode(alg, 0, []Entry{{Key: []byte("a"), Payload: RefValue(ref, 5000).AppendPayload(nil)}})
		branch := Encode(alg, 1, []Entry{{Key: []byte("a"), Payload: AppendChildPayload(nil, child, 7)}})
		for _, raw := range [][]byte{leaf, branch} {
			n, err := Decode(raw)
			if err != nil {
				t.Fatalf("%s: %v", alg, err)
			}
			if n.Alg() != alg || n.Hash() != alg.Sum(raw) || !reflect.DeepEqual(n, Build(alg, n.Level(), entriesOf(n))) {
				t.Fatalf("%s: decoded node disagrees with its encoding", alg)
			}
			if n.IsLeaf() && n.Value(0).Ref != ref || !n.IsLeaf() && func() bool { h, _ := n.Child(0); return h != child }() {
				t.Fatalf("%s: address inside the node did not round-trip", alg)
			}
			// The same bytes under the other algorithm's byte 0 have addresses
			// of the wrong width: never a valid node.
			other := append([]byte{byte(3 - alg)}, raw[1:]...)
			if _, err := Decode(other); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s node relabelled as %s decoded: %v", alg, Alg(3-alg), err)
			}
		}
		idx := EncodeValueIndex(alg, []Chunk{{Hash: child, Size: 9}})
		if _, _, err := DecodeValueIndex(alg, idx); err != nil {
			t.Fatalf("%s value index: %v", alg, err)
		}
		if _, _, err := DecodeValueIndex(Alg(3-alg), idx); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s value index decoded as %s: %v", alg, Alg(3-alg), err)
		}
	}
}

func entriesOf(n *Node) []Entry {
	var es []Entry
	for i := range n.Len() {
		es = append(es, n.Entry(i))
	}
	return es
}

// TestDecodeErrors walks every rejection path of Decode. Each input must
// fail with an error wrapping ErrCorrupt whose text names the defect.
func TestDecodeErrors(t *testing.T) {
	h := XXH3.Sum([]byte("h"))
	okLeaf := Encode(XXH3, 0, []Entry{leafEntry("a", "1")})
	maxKey := bytes.Repeat([]byte{'k'}, MaxKeySize+1)
	refPayload := RefValue(h, 5000).AppendPayload(nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"nil", nil, "too short"},
		{"two bytes", []byte{byte(XXH3), 0}, "too short"},
		{"too large", make([]byte, MaxNodeSize+1), "node limit"},
		{"version 0", []byte{0, 0, 0}, "unknown format (hash algorithm 0)"},
		{"version 3", []byte{3, 0, 0}, "unknown format (hash algorithm 3)"},
		{"level too high", []byte{byte(XXH3), MaxLevel + 1, 0}, "level 64 exceeds"},
		{"value index marker", EncodeValueIndex(XXH3, []Chunk{{Hash: h, Size: 9}}), "level 255 exceeds"},
		{"truncated count", []byte{byte(XXH3), 0, 0x80}, "bad entry count"},
		{"padded count", []byte{byte(XXH3), 0, 0x80, 0x00}, "bad entry count"},
		{"count too large", []byte{byte(XXH3), 0, 5, 1, 'a', 1, 0}, "cannot fit"},
		{"huge count", cat([]byte{byte(XXH3), 0}, binary.AppendUvarint(nil, math.MaxUint64), okLeaf[3:]), "cannot fit"},
		{"empty branch", []byte{byte(XXH3), 1, 0}, "empty branch"},
		{"zero key length", []byte{byte(XXH3), 0, 1, 0, 2, 0, 'x', 0}, "bad key length"},
		{"key too long", Encode(XXH3, 0, []Entry{{Key: maxKey, Payload: []byte{0}}}), "bad key length"},
		{"key past end", []byte{byte(XXH3), 0, 1, 9, 'a', 'b', 1, 0}, "bad key length"},
		{"padded key length", []byte{byte(XXH3), 0, 1, 0x81, 0x00, 'a', 1, 0}, "bad key length"},
		{"payload past end", []byte{byte(XXH3), 0, 1, 1, 'a', 5, 0, 'x'}, "bad payload length"},
		{"payload length missing", []byte{byte(XXH3), 0, 1, 2, 'a', 'b'}, "bad payload length"},
		{"padded payload length", []byte{byte(XXH3), 0, 1, 1, 'a', 0x81, 0x00, 0}, "bad payload length"},
		{"equal keys", Encode(XXH3, 0, []Entry{leafEntry("a", "1"), leafEntry("a", "2")}), "out of order"},
		{"descending keys", Encode(XXH3, 0, []Entry{leafEntry("b", "1"), leafEntry("a", "2")}), "out of order"},
		{"empty leaf payload", Encode(XXH3, 0, []Entry{{Key: []byte("a")}}), "empty leaf payload"},
		{"inline too large", Encode(XXH3, 0, []Entry{leafEntry("a", strings.Repeat("v", MaxInlineValue+1))}), "exceeds 1024"},
		{"unknown value kind", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: []byte{7, 'x'}}}), "unknown value kind 7"},
		{"short value ref", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: refPayload[:XXH3.Size()]}}), "short value reference"},
		{"value ref trailing", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: cat(refPayload, []byte{0})}}), "bad value reference size"},
		{"value ref truncated size", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: cat(refPayload[:1+XXH3.Size()], []byte{0x80})}}), "bad value reference size"},
		{"value ref padded size", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: cat(refPayload[:1+XXH3.Size()], []byte{0x88, 0x80, 0x00})}}), "bad value reference size"},
		{"value ref too small", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: RefValue(h, MaxInlineValue).AppendPayload(nil)}}), "only 1024 bytes"},
		{"short child", Encode(XXH3, 1, []Entry{{Key: []byte("a"), Payload: h.Bytes()}}), "short child payload"},
		{"child count trailing", Encode(XXH3, 1, []Entry{{Key: []byte("a"), Payload: cat(AppendChildPayload(nil, h, 1), []byte{0})}}), "bad child count"},
		{"child count padded", Encode(XXH3, 1, []Entry{{Key: []byte("a"), Payload: cat(h.Bytes(), []byte{0x81, 0x00})}}), "bad child count"},
		{"child count zero", Encode(XXH3, 1, []Entry{childEntry("a", 0)}), "zero records"},
		{"leaf payload in branch", Encode(XXH3, 1, []Entry{leafEntry("a", "1")}), "short child payload"},
		{"count overflow", Encode(XXH3, 2, []Entry{childEntry("a", math.MaxUint64), childEntry("b", 1)}), "overflows"},
		{"trailing bytes", cat(okLeaf, []byte{0}), "trailing bytes"},
		{"missing entry", okLeaf[:len(okLeaf)-1], "bad payload length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Decode(tc.in)
			if err == nil {
				t.Fatalf("Decode(%x) accepted a node of %d entries", tc.in, n.Len())
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %q does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDecodeAcceptsLimits(t *testing.T) {
	h := XXH3.Sum([]byte("h"))
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty leaf", EmptyLeaf(XXH3)},
		{"max key", Encode(XXH3, 0, []Entry{{Key: bytes.Repeat([]byte{0}, MaxKeySize), Payload: []byte{0}}})},
		{"max inline", Encode(XXH3, 0, []Entry{leafEntry("a", strings.Repeat("v", MaxInlineValue))})},
		{"smallest ref", Encode(XXH3, 0, []Entry{{Key: []byte("a"), Payload: RefValue(h, MaxInlineValue+1).AppendPayload(nil)}})},
		{"max level", Encode(XXH3, MaxLevel, []Entry{childEntry("a", 1)})},
		{"max count", Encode(XXH3, 2, []Entry{childEntry("a", math.MaxUint64-1), childEntry("b", 1)})},
		{"prefix keys", Encode(XXH3, 0, []Entry{leafEntry("a", ""), leafEntry("a\x00", ""), leafEntry("b", "")})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Decode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoded(t, tc.in, n)
		})
	}
}

func TestNodeAccessors(t *testing.T) {
	h := XXH3.Sum([]byte("c"))
	leaf, err := Decode(Encode(XXH3, 0, []Entry{
		leafEntry("b", "2"),
		{Key: []byte("d"), Payload: RefValue(h, 4000).AppendPayload(nil)},
		leafEntry("f", ""),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.IsLeaf() || leaf.Level() != 0 || leaf.Len() != 3 || leaf.Count() != 3 {
		t.Fatalf("leaf: level %d len %d count %d", leaf.Level(), leaf.Len(), leaf.Count())
	}
	if v := leaf.Value(0); v.IsRef || string(v.Inline) != "2" || v.Size != 1 {
		t.Fatalf("Value(0) = %+v", v)
	}
	if v := leaf.Value(1); !v.IsRef || v.Ref != h || v.Size != 4000 {
		t.Fatalf("Value(1) = %+v", v)
	}
	if !leaf.Value(1).Equal(RefValue(h, 4000)) || leaf.Value(1).Equal(RefValue(h, 4001)) || leaf.Value(0).Equal(leaf.Value(1)) {
		t.Fatalf("Value.Equal is wrong")
	}
	for key, want := range map[string]int{"": 0, "a": 0, "b": 0, "b\x00": 1, "c": 1, "d": 1, "e": 2, "f": 2, "g": 3} {
		if got := leaf.Search([]byte(key)); got != want {
			t.Fatalf("Search(%q) = %d, want %d", key, got, want)
		}
	}
	if string(leaf.LastKey()) != "f" {
		t.Fatalf("LastKey = %q", leaf.LastKey())
	}
	// Returned slices are capped: appending must not write into the node.
	_ = append(leaf.Key(0), 'X')
	_ = append(leaf.Payload(0), 'X')
	if string(leaf.Key(1)) != "d" {
		t.Fatalf("append to Key(0) changed the node")
	}
	branch, err := Decode(Encode(XXH3, 2, []Entry{childEntry("m", 10), childEntry("z", 5)}))
	if err != nil {
		t.Fatal(err)
	}
	if c, n := branch.Child(1); c != XXH3.Sum([]byte("z")) || n != 5 || branch.Count() != 15 {
		t.Fatalf("Child(1) = %s, %d; Count %d", c, n, branch.Count())
	}
	mustPanic(t, "Value on a branch", func() { branch.Value(0) })
	mustPanic(t, "Child on a leaf", func() { leaf.Child(0) })
	empty, _ := Decode(EmptyLeaf(XXH3))
	if empty.LastKey() != nil || empty.Search([]byte("a")) != 0 || empty.Hash() != EmptyRoot(XXH3) {
		t.Fatalf("empty leaf accessors are wrong")
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	f()
}

// TestDecodeValueIndexErrors walks every rejection path of DecodeValueIndex.
func TestDecodeValueIndexErrors(t *testing.T) {
	h := XXH3.Sum([]byte("h"))
	one := EncodeValueIndex(XXH3, []Chunk{{Hash: h, Size: 100}})
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"nil", nil, "not a value index"},
		{"node", EmptyLeaf(XXH3), "not a value index"},
		{"bad version", cat([]byte{2}, one[1:]), "not a value index"},
		{"no chunks", []byte{byte(XXH3), 0xFF, 0}, "chunk count"},
		{"padded count", cat([]byte{byte(XXH3), 0xFF, 0x81, 0x00}, one[3:]), "chunk count"},
		{"count too large", cat([]byte{byte(XXH3), 0xFF, 2}, one[3:]), "chunk count"},
		{"zero size", EncodeValueIndex(XXH3, []Chunk{{Hash: h, Size: 0}}), "bad chunk size"},
		{"truncated size", cat(one[:len(one)-1], []byte{0x80}), "bad chunk size"},
		{"padded size", cat(one[:3+XXH3.Size()], []byte{0xe4, 0x80, 0x00}), "bad chunk size"},
		{"size over u32", cat(one[:3+XXH3.Size()], binary.AppendUvarint(nil, math.MaxUint32+1)), "bad chunk size"},
		{"total too large", EncodeValueIndex(XXH3, []Chunk{{Hash: h, Size: MaxValueSize}, {Hash: h, Size: 1}}), "more than"},
		{"trailing", cat(one, []byte{0}), "trailing bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeValueIndex(XXH3, tc.in)
			if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeValueIndex(XXH3, %x) error = %v, want ErrCorrupt mentioning %q", tc.in, err, tc.want)
			}
		})
	}
	chunks, total, err := DecodeValueIndex(XXH3, EncodeValueIndex(XXH3, []Chunk{{Hash: h, Size: MaxValueSize - 1}, {Hash: h, Size: 1}}))
	if err != nil || len(chunks) != 2 || total != MaxValueSize {
		t.Fatalf("index of exactly MaxValueSize bytes: %d chunks, %d bytes, %v", len(chunks), total, err)
	}
}

// TestBuildMatchesDecode checks Build against Decode on nodes whose lengths
// need multi-byte varints, at both kinds of level.
func TestBuildMatchesDecode(t *testing.T) {
	long := strings.Repeat("k", 300)
	cases := []struct {
		level int
		ents  []Entry
	}{
		{0, nil},
		{0, []Entry{leafEntry("a", "1"), leafEntry(long, strings.Repeat("v", 1000))}},
		{0, []Entry{leafEntry("a", "1"), {Key: []byte("b"), Payload: RefValue(XXH3.Sum([]byte("v")), 5000).AppendPayload(nil)}}},
		{2, []Entry{childEntry("a", 1), childEntry(long, 1<<40)}},
	}
	for _, c := range cases {
		b := Build(XXH3, c.level, c.ents)
		d, err := Decode(b.Raw())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(b, d) {
			t.Errorf("level %d: Build %+v, Decode %+v", c.level, b, d)
		}
	}
}

// TestCloneOwnsItsBytes: a clone equals its node but shares no bytes with
// the buffer the node was decoded from.
func TestCloneOwnsItsBytes(t *testing.T) {
	buf := make([]byte, 1<<16)
	raw := Encode(XXH3, 0, []Entry{leafEntry("a", "1"), leafEntry("b", "2")})
	copy(buf[100:], raw)
	n, err := Decode(buf[100 : 100+len(raw) : 100+len(raw)])
	if err != nil {
		t.Fatal(err)
	}
	c := n.Clone()
	if !reflect.DeepEqual(c, n) {
		t.Fatalf("clone differs: %+v vs %+v", c, n)
	}
	clear(buf)
	if c.Hash() != XXH3.Sum(raw) || !bytes.Equal(c.Raw(), raw) || string(c.Key(1)) != "b" {
		t.Fatal("clone changed with the buffer its node was decoded from")
	}
	if cap(c.Raw()) >= 2*len(raw)+64 {
		t.Fatalf("clone keeps %d bytes for a %d-byte node", cap(c.Raw()), len(raw))
	}
}

// TestDecoderMatchesDecode: a Decoder decodes a stream of nodes of every
// size exactly as Decode does, and no node's entries change as the
// Decoder goes on (each has its own part of a block, or its own table).
func TestDecoderMatchesDecode(t *testing.T) {
	var raws [][]byte
	for i := range 300 {
		n := 1 + (i*37)%300
		if i%50 == 7 {
			n = decoderBlock/4 + 1 + i // too large to share a block
		}
		ents := make([]Entry, n)
		for j := range ents {
			ents[j] = leafEntry(fmt.Sprintf("k%03d-%06d", i, j), "v")
		}
		raws = append(raws, Encode(XXH3, 0, ents))
	}
	raws = append(raws, []byte("not a node"))
	var d Decoder
	var got []*Node
	for _, raw := range raws {
		want, werr := Decode(raw)
		n, err := d.Decode(raw)
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(n, want) {
			t.Fatalf("Decoder gives %v, %v; Decode %v, %v", n, err, want, werr)
		}
		got = append(got, n)
	}
	for i, n := range got[:len(got)-1] {
		want, _ := Decode(raws[i])
		if !reflect.DeepEqual(n, want) {
			t.Fatalf("node %d changed as the Decoder went on", i)
		}
		c := n.Clone()
		if !reflect.DeepEqual(c, n) || &c.ents[0] == &n.ents[0] {
			t.Fatalf("node %d: clone shares its entry table with the Decoder's block", i)
		}
	}
}
