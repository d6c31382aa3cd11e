package net

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// BenchmarkPartialSync is issue 6's benchmark: n records (ARBOR_BENCH_N,
// default 1M; the figure is 10M), a client scoped to a key range
// holding 0.1% of them, then 100 changes inside the scope and 100 000
// outside. It reports the partial clone against a full clone, and the
// partial replica's sync of those changes against a full replica's sync
// (retained-base path), in bytes on the wire and time, measured in the same
// run. Run with -benchtime=1x.
func BenchmarkPartialSync(b *testing.B) {
	e := getBenchEnv(b)
	ctx := context.Background()
	// Keys are scattered uniformly by their first 8 bytes: [0, 2^64/1000)
	// holds 0.1% of them.
	end := make([]byte, 8)
	binary.BigEndian.PutUint64(end, ^uint64(0)/1000)
	sc := scope.New(tree.Range{Start: []byte{0}, End: end})
	inScope := func(i int) bool { return sc.Contains(benchKey(i)) }

	open := func(name string) *tree.Store {
		dir := filepath.Join(e.ts.dir, name)
		os.RemoveAll(dir)
		s, err := tree.Open(dir, &tree.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	syncOnce := func(s *tree.Store, partial bool) (*SyncResult, time.Duration) {
		opts := e.ts.opts(alice)
		if partial {
			opts.Scope = sc
		}
		start := time.Now()
		res, err := Sync(ctx, s, opts)
		if err != nil {
			b.Fatal(err)
		}
		return res, time.Since(start)
	}
	for b.Loop() {
		part, full := open("partial"), open("full")
		pc, pcT := syncOnce(part, true)
		fc, fcT := syncOnce(full, false)

		// 100 changes inside the scope and 100 000 outside, on the server.
		r := rand.New(rand.NewPCG(7, 7))
		var edits []tree.Edit
		in, out := 0, 0
		for i := 0; in < 100 || out < 100_000; i++ {
			k := r.IntN(e.n)
			v := []byte(fmt.Sprintf("changed-%d-%d", k, i))
			switch {
			case inScope(k) && in < 100:
				in++
			case !inScope(k) && out < 100_000:
				out++
			default:
				continue
			}
			edits = append(edits, tree.Edit{Key: benchKey(k), Value: v})
		}
		if _, err := e.ts.store.Update(ctx, HeadRef, edits); err != nil {
			b.Fatal(err)
		}
		ps, psT := syncOnce(part, true)
		fs, fsT := syncOnce(full, false)

		if _, err := part.VerifyScope(ctx, ref(b, part, BaseRef), sc); err != nil {
			b.Fatal(err)
		}
		wire := func(r *SyncResult) float64 { return float64(r.BytesSent + r.BytesReceived) }
		b.ReportMetric(float64(pc.Pulled), "partial-clone-records")
		b.ReportMetric(wire(pc), "partial-clone-B")
		b.ReportMetric(wire(fc), "full-clone-B")
		b.ReportMetric(wire(pc)/wire(fc), "clone-bytes-ratio")
		b.ReportMetric(float64(pcT.Milliseconds()), "partial-clone-ms")
		b.ReportMetric(float64(fcT.Milliseconds()), "full-clone-ms")
		b.ReportMetric(wire(ps), "partial-sync-B")
		b.ReportMetric(wire(fs), "full-sync-B")
		b.ReportMetric(wire(ps)/wire(fs), "sync-bytes-ratio")
		b.ReportMetric(float64(psT.Microseconds())/1000, "partial-sync-ms")
		b.ReportMetric(float64(fsT.Microseconds())/1000, "full-sync-ms")
		b.ReportMetric(float64(ps.RoundTrips), "partial-sync-roundtrips")
		part.Close()
		full.Close()
	}
}
