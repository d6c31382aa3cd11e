package node

import (
	"encoding/binary"
	"testing"
	"time"
)

// benchLeaf returns a leaf of n entries with 16-byte keys and 100-byte
// values, the shape of the tree benchmarks' records.
func benchLeaf(n int) ([]byte, [][]byte) {
	ents := make([]Entry, n)
	keys := make([][]byte, n)
	for i := range ents {
		k := make([]byte, 16)
		binary.BigEndian.PutUint64(k, uint64(i)*0x9E3779B97F4A7C15>>8|uint64(i)<<56)
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		copy(k, []byte{byte(i >> 8), byte(i)}) // ascending
		keys[i] = k
		ents[i] = Entry{Key: k, Payload: InlineValue(make([]byte, 100)).AppendPayload(nil)}
	}
	return Encode(XXH3, 0, ents), keys
}

// BenchmarkDecode validates and indexes a 32-entry leaf (about 4 KiB, the
// mean leaf). Baseline: Sum of the same bytes, which every node read from
// disk or the network also pays, measured in the same run.
func BenchmarkDecode(b *testing.B) {
	raw, _ := benchLeaf(32)
	var dec, sum time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		_ = XXH3.Sum(raw)
		sum += time.Since(t1)
		dec += t1.Sub(t0)
	}
	mb := float64(len(raw)) * float64(b.N) / 1e6
	b.ReportMetric(mb/dec.Seconds(), "decode-MB/s")
	b.ReportMetric(mb/sum.Seconds(), "sum-MB/s")
	b.ReportMetric(float64(32*b.N)/dec.Seconds(), "entries/s")
}

// BenchmarkSearch looks up every key of a 32-entry leaf.
func BenchmarkSearch(b *testing.B) {
	raw, keys := benchLeaf(32)
	n, err := Decode(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := keys[i%len(keys)]
		if j := n.Search(k); j != i%len(keys) {
			b.Fatalf("Search = %d", j)
		}
	}
}

// BenchmarkSum hashes a 4 KiB node (the mean leaf) under each algorithm:
// the per-node price of choosing BLAKE3 over xxh3.
func BenchmarkSum(b *testing.B) {
	raw := make([]byte, 4096)
	for i := range raw {
		raw[i] = byte(i * 31)
	}
	for _, alg := range Algs {
		b.Run(alg.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				_ = alg.Sum(raw)
			}
		})
	}
}
