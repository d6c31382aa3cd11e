package chunker

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/zeebo/xxh3"
)

// BenchmarkSplitValue cuts pseudo-random values into content-defined
// chunks. Baseline: hashing the same bytes with xxh3-128 (which every
// stored chunk pays anyway), measured in the same run; ratio is
// SplitValue's throughput over xxh3's.
func BenchmarkSplitValue(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 16 << 20} {
		v := randomBytes(uint64(size), size)
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			var chunks int
			var split, hash time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				chunks += len(SplitValue(v))
				t1 := time.Now()
				_ = xxh3.Hash128(v)
				hash += time.Since(t1)
				split += t1.Sub(t0)
			}
			mb := float64(size) * float64(b.N) / 1e6
			b.ReportMetric(mb/split.Seconds(), "split-MB/s")
			b.ReportMetric(mb/hash.Seconds(), "xxh3-MB/s")
			b.ReportMetric(hash.Seconds()/split.Seconds(), "ratio")
			b.ReportMetric(float64(size)*float64(b.N)/float64(chunks), "bytes/chunk")
		})
	}
}

// BenchmarkSplitter feeds 16-byte keys with 100-byte payloads to a leaf
// Splitter, as Builder and Apply do for every record. Baseline: xxh3 of the
// same keys alone (the splitter's hash), in the same run.
func BenchmarkSplitter(b *testing.B) {
	const n = 1 << 16
	keys := make([][]byte, n)
	for i := range keys {
		k := make([]byte, 16)
		binary.BigEndian.PutUint64(k, uint64(i)*0x9E3779B97F4A7C15)
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		keys[i] = k
	}
	payload := node.InlineValue(make([]byte, 100)).AppendPayload(nil)
	sp := NewSplitter(Config{}, 0)
	var cuts int
	var split, hash time.Duration
	var sink uint64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for _, k := range keys {
			if sp.Next(node.Entry{Key: k, Payload: payload}) {
				cuts++
			}
		}
		t1 := time.Now()
		for _, k := range keys {
			sink += xxh3.HashSeed(k, 1)
		}
		hash += time.Since(t1)
		split += t1.Sub(t0)
	}
	_ = sink
	entries := float64(n) * float64(b.N)
	b.ReportMetric(entries/split.Seconds(), "entries/s")
	b.ReportMetric(entries/hash.Seconds(), "xxh3-keys/s")
	b.ReportMetric(hash.Seconds()/split.Seconds(), "ratio")
	b.ReportMetric(entries/float64(max(cuts, 1)), "entries/node")
}
