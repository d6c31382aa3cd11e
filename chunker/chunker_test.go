package chunker

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/zeebo/xxh3"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkSizes asserts SplitValue's contract for v: chunk sizes within
// [MinChunk, MaxChunk] except the last (which may be shorter), summing to len(v).
func checkSizes(t *testing.T, v []byte, sizes []int) {
	t.Helper()
	sum := 0
	for i, n := range sizes {
		if n <= 0 || n > MaxChunk {
			t.Fatalf("chunk %d of %d has %d bytes, outside (0, %d]", i, len(sizes), n, MaxChunk)
		}
		if i < len(sizes)-1 && n < MinChunk {
			t.Fatalf("chunk %d of %d has %d bytes, below MinChunk %d", i, len(sizes), n, MinChunk)
		}
		sum += n
	}
	if sum != len(v) {
		t.Fatalf("chunks sum to %d bytes, value has %d", sum, len(v))
	}
}

func TestSplitValueSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"MinChunk", randomBytes(1, MinChunk)},
		{"MinChunk+1", randomBytes(2, MinChunk+1)},
		{"AvgChunk", randomBytes(3, AvgChunk)},
		{"MaxChunk", randomBytes(4, MaxChunk)},
		{"MaxChunk+1", randomBytes(5, MaxChunk+1)},
		{"random 1MiB", randomBytes(6, 1<<20)},
		{"random 3MiB+7", randomBytes(7, 3<<20+7)},
		{"zeros 1MiB", make([]byte, 1<<20)},
		{"repeating text", bytes.Repeat([]byte("arbor sync "), 100_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sizes := SplitValue(tc.v)
			checkSizes(t, tc.v, sizes)
			if len(tc.v) == 0 && len(sizes) != 0 {
				t.Fatalf("empty value has %d chunks", len(sizes))
			}
			if again := SplitValue(bytes.Clone(tc.v)); fmt.Sprint(again) != fmt.Sprint(sizes) {
				t.Fatalf("SplitValue is not deterministic: %v then %v", sizes, again)
			}
		})
	}
}

// TestSplitValueZerosHitMaxChunk: bytes that never produce a cut point
// (all zeros give a constant hash with non-zero top bits) are cut at
// MaxChunk, so a chunk never exceeds it.
func TestSplitValueZerosHitMaxChunk(t *testing.T) {
	v := make([]byte, 5*MaxChunk+10)
	sizes := SplitValue(v)
	checkSizes(t, v, sizes)
	for i, n := range sizes[:len(sizes)-1] {
		if n != MaxChunk {
			t.Fatalf("chunk %d of zeros has %d bytes, want MaxChunk", i, n)
		}
	}
}

// TestSplitValueMeanSize checks that random data is cut near AvgChunk: the
// mean of a few hundred chunks of fixed pseudo-random data lies well inside
// [MinChunk, MaxChunk] around the average.
func TestSplitValueMeanSize(t *testing.T) {
	v := randomBytes(42, 8<<20)
	sizes := SplitValue(v)
	mean := len(v) / len(sizes)
	if mean < AvgChunk/2 || mean > 2*AvgChunk {
		t.Fatalf("mean chunk %d bytes over %d chunks, want near %d", mean, len(sizes), AvgChunk)
	}
}

func chunkHashes(v []byte) []uint64 {
	var hs []uint64
	for _, n := range SplitValue(v) {
		hs = append(hs, xxh3.Hash(v[:n]))
		v = v[n:]
	}
	return hs
}

// TestSplitValueEditLocality: changing, inserting or deleting one byte of a
// 1 MiB value changes only the chunks around the edit.
func TestSplitValueEditLocality(t *testing.T) {
	orig := randomBytes(9, 1<<20)
	before := map[uint64]bool{}
	hs := chunkHashes(orig)
	for _, h := range hs {
		before[h] = true
	}
	for _, at := range []int{0, 1000, 300_000, 777_777, len(orig) - 1} {
		edits := map[string][]byte{
			"flip":   append(append(bytes.Clone(orig[:at]), orig[at]^0x55), orig[at+1:]...),
			"insert": append(append(bytes.Clone(orig[:at]), 'X'), orig[at:]...),
			"delete": append(bytes.Clone(orig[:at]), orig[at+1:]...),
		}
		for name, v := range edits {
			changed := 0
			after := chunkHashes(v)
			for _, h := range after {
				if !before[h] {
					changed++
				}
			}
			// One chunk holds the edit; a cut point moving can change its
			// neighbour. Anything more means the edit cascades.
			if changed > 2 {
				t.Errorf("%s at %d: %d of %d chunks are new", name, at, changed, len(after))
			}
			if changed == 0 {
				t.Errorf("%s at %d: no chunk changed", name, at)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	minBytes := uint32(2 * (node.MaxKeySize + node.MaxInlineValue + 32))
	for _, tc := range []struct {
		name string
		c    Config
		ok   bool
	}{
		{"zero (defaults)", Config{}, true},
		{"smallest fanouts", Config{LeafFanout: 2, BranchFanout: 2}, true},
		{"largest fanouts", Config{LeafFanout: 1 << 16, BranchFanout: 1 << 16}, true},
		{"leaf fanout 1", Config{LeafFanout: 1}, false},
		{"branch fanout 1", Config{BranchFanout: 1}, false},
		{"leaf fanout too large", Config{LeafFanout: 1<<16 + 1}, false},
		{"branch fanout too large", Config{BranchFanout: 1<<16 + 1}, false},
		{"smallest max bytes", Config{MaxBytes: minBytes}, true},
		{"max bytes too small", Config{MaxBytes: minBytes - 1}, false},
		{"largest max bytes", Config{MaxBytes: node.MaxNodeSize / 2}, true},
		{"max bytes too large", Config{MaxBytes: node.MaxNodeSize/2 + 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate(%+v) = %v", tc.c, err)
			}
			if !tc.ok && !errors.Is(err, ErrBadConfig) {
				t.Fatalf("Validate(%+v) = %v, want ErrBadConfig", tc.c, err)
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.LeafFanout != DefaultLeafFanout || d.BranchFanout != DefaultBranchFanout || d.MaxBytes != DefaultMaxBytes {
		t.Fatalf("WithDefaults() = %+v", d)
	}
	if c := (Config{LeafFanout: 7}).WithDefaults(); c.LeafFanout != 7 || c.BranchFanout != DefaultBranchFanout {
		t.Fatalf("WithDefaults overrode a set field: %+v", c)
	}
}

// nonBoundaryKeys returns n distinct keys of size bytes that the splitter
// of level does not pick as boundaries, so only the caps can end a node.
func nonBoundaryKeys(sp *Splitter, n, size int) [][]byte {
	var keys [][]byte
	for i := 0; len(keys) < n; i++ {
		k := bytes.Repeat([]byte{'k'}, size)
		copy(k, fmt.Sprintf("%08d", i))
		if !sp.IsBoundaryKey(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func leafEntry(k []byte) node.Entry {
	return node.Entry{Key: k, Payload: node.InlineValue(nil).AppendPayload(nil)}
}

// TestSplitterEntryCap: without key-decided boundaries, a node ends after
// exactly MaxEntriesFactor × fanout entries, at every level.
func TestSplitterEntryCap(t *testing.T) {
	c := Config{LeafFanout: 3, BranchFanout: 5}
	for level, fan := range []int{3, 5, 5} {
		sp := NewSplitter(c, level)
		keys := nonBoundaryKeys(sp, 3*fan*MaxEntriesFactor, 8)
		for i, k := range keys {
			cut := sp.Next(leafEntry(k))
			if want := (i+1)%(fan*MaxEntriesFactor) == 0; cut != want {
				t.Fatalf("level %d entry %d: cut %v, want %v", level, i, cut, want)
			}
			if sp.AtBoundary() != cut {
				t.Fatalf("level %d entry %d: AtBoundary %v after cut %v", level, i, sp.AtBoundary(), cut)
			}
		}
	}
}

// TestSplitterByteCap: a node ends at the first entry that brings its key
// and payload bytes to MaxBytes.
func TestSplitterByteCap(t *testing.T) {
	c := Config{LeafFanout: 1 << 16, MaxBytes: 2 * (node.MaxKeySize + node.MaxInlineValue + 32)}
	sp := NewSplitter(c, 0)
	keys := nonBoundaryKeys(sp, 40, 1000)
	bytesSince := 0
	for i, k := range keys {
		e := leafEntry(k)
		bytesSince += e.Size()
		want := bytesSince >= int(c.MaxBytes)
		if got := sp.Next(e); got != want {
			t.Fatalf("entry %d (%d bytes since boundary): cut %v, want %v", i, bytesSince, got, want)
		}
		if want {
			bytesSince = 0
		}
	}
	// Reset discards the running size.
	sp.Next(leafEntry(keys[0]))
	sp.Reset()
	if !sp.AtBoundary() {
		t.Fatalf("AtBoundary false after Reset")
	}
}

// TestSplitterKeyRule: the boundary decision depends on the key and level
// only, hits about 1/fanout of keys, and differs between levels.
func TestSplitterKeyRule(t *testing.T) {
	c := Config{LeafFanout: 32, BranchFanout: 128}
	leaf, leaf2, branch, branch2 := NewSplitter(c, 0), NewSplitter(c, 0), NewSplitter(c, 1), NewSplitter(c, 2)
	const n = 200_000
	var nLeaf, nBranch, both, nBranch2 int
	for i := 0; i < n; i++ {
		k := []byte(fmt.Sprintf("key-%d", i))
		l := leaf.IsBoundaryKey(k)
		if l != leaf2.IsBoundaryKey(k) {
			t.Fatalf("two leaf splitters disagree on %q", k)
		}
		// Feeding entries (and payloads) never changes the key rule.
		leaf2.Next(node.Entry{Key: k, Payload: bytes.Repeat([]byte{1}, i%500)})
		b := branch.IsBoundaryKey(k)
		if l {
			nLeaf++
		}
		if b {
			nBranch++
		}
		if l && b {
			both++
		}
		if branch2.IsBoundaryKey(k) {
			nBranch2++
		}
	}
	// Expected n/32 = 6250 and n/128 = 1562; the bounds are ±15%, far
	// beyond the binomial spread of these fixed keys.
	if nLeaf < 5300 || nLeaf > 7200 {
		t.Fatalf("%d leaf boundaries in %d keys, want about %d", nLeaf, n, n/32)
	}
	if nBranch < 1330 || nBranch > 1800 || nBranch2 < 1330 || nBranch2 > 1800 {
		t.Fatalf("%d and %d branch boundaries in %d keys, want about %d", nBranch, nBranch2, n, n/128)
	}
	// Independent seeds: about n/32/128 ≈ 49 keys end both a leaf and a branch.
	if both > 150 {
		t.Fatalf("%d keys end both a leaf and a level-1 node: levels are correlated", both)
	}
}
