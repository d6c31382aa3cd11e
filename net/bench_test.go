package net

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// benchN is the dataset size of the sync benchmarks (ARBOR_BENCH_N overrides).
func benchN() int {
	if s := os.Getenv("ARBOR_BENCH_N"); s != "" {
		var n int
		fmt.Sscan(s, &n)
		return n
	}
	return 1_000_000
}

func benchKey(i int) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(i)*0x9E3779B97F4A7C15) // scattered, 16 bytes
	binary.BigEndian.PutUint64(k[8:], uint64(i))
	return k
}

func benchVal(r *rand.Rand) []byte {
	v := make([]byte, 100)
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	return v
}

// benchEnv is shared by the sync benchmarks: a server with n records
// (root r0) and a template client directory synced to r0.
type benchEnv struct {
	ts       *testServer
	r0       node.Hash
	template string
	n        int
	clone    *SyncResult
}

var (
	benchOnce sync.Once
	benchE    *benchEnv
	benchErr  error
)

// benchDir is the directory of the shared benchmark environment, removed
// when the test binary exits.
var benchDir string

func cleanupBenchEnv() {
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
}

func getBenchEnv(b *testing.B) *benchEnv {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "arbor-net-bench-")
		if err != nil {
			benchErr = err
			return
		}
		benchDir = dir
		n := benchN()
		st, err := tree.Open(filepath.Join(dir, "server"), &tree.Options{NoSync: true})
		if err != nil {
			benchErr = err
			return
		}
		ctx := context.Background()
		bt, _ := st.NewBatch()
		bl := bt.NewBuilder(ctx)
		keys := make([][]byte, n)
		for i := range keys {
			keys[i] = benchKey(i)
		}
		sortKeys(keys)
		r := rand.New(rand.NewPCG(1, 2))
		for _, k := range keys {
			if err := bl.Add(k, benchVal(r)); err != nil {
				benchErr = err
				return
			}
		}
		r0, err := bl.Finish()
		if err != nil {
			benchErr = err
			return
		}
		bt.SetRef(HeadRef, r0)
		if err := bt.Commit(ctx); err != nil {
			benchErr = err
			return
		}
		// A serving store settled long ago: settle it now, not during the
		// first clone measured.
		if err := st.Settle(ctx); err != nil {
			benchErr = err
			return
		}
		srv, err := NewServer(st, ServerOptions{Tokens: testTokens, CertDir: filepath.Join(dir, "cert")})
		if err != nil {
			benchErr = err
			return
		}
		if err := srv.Listen("127.0.0.1:0"); err != nil {
			benchErr = err
			return
		}
		go srv.Serve(context.Background())
		e := &benchEnv{ts: &testServer{srv: srv, store: st, addr: srv.Addr().String(), fp: srv.Fingerprint(), dir: dir}, r0: r0, n: n,
			template: filepath.Join(dir, "template")}
		// Make the template client by cloning once. This also warms what a
		// server that has been up a while has warm (its node cache, the
		// process heap), so that every clone BenchmarkClone measures is
		// alike; a server's first clone after it starts reads every node
		// from Pebble.
		c, err := tree.Open(e.template, &tree.Options{NoSync: true})
		if err != nil {
			benchErr = err
			return
		}
		e.clone, err = Sync(ctx, c, e.ts.opts(alice))
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			benchErr = err
			return
		}
		benchE = e
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchE
}

func sortKeys(keys [][]byte) {
	// Keys are 16 bytes; sort by their big-endian halves.
	type kv struct{ a, b uint64 }
	tmp := make([]kv, len(keys))
	for i, k := range keys {
		tmp[i] = kv{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:])}
	}
	slices.SortFunc(tmp, func(x, y kv) int {
		switch {
		case x.a < y.a:
			return -1
		case x.a > y.a:
			return 1
		case x.b < y.b:
			return -1
		case x.b > y.b:
			return 1
		}
		return 0
	})
	for i, t := range tmp {
		binary.BigEndian.PutUint64(keys[i], t.a)
		binary.BigEndian.PutUint64(keys[i][8:], t.b)
	}
}

func reportSync(b *testing.B, res *SyncResult) {
	b.ReportMetric(float64(res.BytesSent), "B-sent/op")
	b.ReportMetric(float64(res.BytesReceived), "B-recv/op")
	b.ReportMetric(float64(res.RoundTrips), "roundtrips/op")
	b.ReportMetric(float64(res.NodesFetched), "nodes/op")
}

// BenchmarkClone measures the initial clone of n records by walk and, right
// after each clone, the raw quic-go stream throughput of the same number of
// bytes (discarded, then written to a file). The machine is shared and its
// speed drifts, so each clone is compared with the raw stream measured next
// to it: ratio-to-raw is the median of those paired ratios. MB/s is the
// best clone; cpu-ms is the process CPU time of that clone.
func BenchmarkClone(b *testing.B) {
	e := getBenchEnv(b)
	var best *SyncResult
	var bestCPU time.Duration
	var ratios, fileRatios []float64
	var raw, rawFile float64
	var rawCPU time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		dir := filepath.Join(e.ts.dir, fmt.Sprintf("clone-%d", i))
		c, err := tree.Open(dir, &tree.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		opts := e.ts.opts(alice)
		if v := os.Getenv("ARBOR_BENCH_PAR"); v != "" {
			fmt.Sscan(v, &opts.Parallel)
		}
		if v := os.Getenv("ARBOR_BENCH_BATCH"); v != "" {
			fmt.Sscan(v, &opts.BatchNodes)
		}
		cpu0 := cpuTime()
		// ARBOR_CLONE_PROF=path writes a CPU profile of each clone alone
		// (path.0, path.1, …): go test's -cpuprofile also covers the set-up.
		// ARBOR_RAW_PROF=path does the same for the raw streams.
		// ARBOR_CLONE_TRACE=path writes an execution trace of the third.
		// ARBOR_PHASES=1 prints the clone's progress with timestamps,
		// including the last event of each phase (the walk's last is when
		// the last node arrived: what follows is the commit).
		var pf, tf *os.File
		if v := os.Getenv("ARBOR_CLONE_PROF"); v != "" {
			if pf, err = os.Create(fmt.Sprintf("%s.%d", v, i)); err != nil {
				b.Fatal(err)
			}
			pprof.StartCPUProfile(pf)
		}
		if v := os.Getenv("ARBOR_CLONE_TRACE"); v != "" && i == 2 {
			if tf, err = os.Create(v); err != nil {
				b.Fatal(err)
			}
			trace.Start(tf)
		}
		if os.Getenv("ARBOR_PHASES") != "" {
			t0 := time.Now()
			var last Progress
			var lastAt time.Duration
			show := func(p Progress, at time.Duration) {
				fmt.Fprintf(os.Stderr, "%7.1fms %s nodes=%d\n", float64(at.Microseconds())/1000, p.Phase, p.Nodes)
			}
			opts.Progress = func(p Progress) {
				at := time.Since(t0)
				if p.Phase != last.Phase && last.Phase != "" {
					show(last, lastAt) // the last event of a phase
				}
				if p.Phase != last.Phase || p.Nodes%8192 < 256 {
					show(p, at)
				}
				last, lastAt = p, at
			}
		}
		b.StartTimer()
		res, err := Sync(context.Background(), c, opts)
		b.StopTimer()
		if tf != nil {
			trace.Stop()
			tf.Close()
		}
		if pf != nil {
			pprof.StopCPUProfile()
			pf.Close()
		}
		cpu := cpuTime() - cpu0
		if err != nil {
			b.Fatal(err)
		}
		if res.ServerRoot != e.r0 || ref(b, c, BaseRef) != e.r0 {
			b.Fatal("clone did not converge")
		}
		c.Close()
		os.RemoveAll(dir)
		if best == nil || res.Duration < best.Duration {
			best, bestCPU = res, cpu
		}
		got := float64(res.BytesReceived) / res.Duration.Seconds()
		cpu0 = cpuTime()
		var rpf *os.File
		if v := os.Getenv("ARBOR_RAW_PROF"); v != "" {
			rpf, _ = os.Create(fmt.Sprintf("%s.%d", v, i))
			pprof.StartCPUProfile(rpf)
		}
		r := rawQUIC(b, res.BytesReceived, nil)
		if rpf != nil {
			pprof.StopCPUProfile()
			rpf.Close()
		}
		if r > raw {
			raw, rawCPU = r, cpuTime()-cpu0
		}
		// The same stream written to a file (no fsync): what receiving
		// and storing the bytes costs with no tree at all.
		f, err := os.CreateTemp(e.ts.dir, "raw-quic-*")
		if err != nil {
			b.Fatal(err)
		}
		rf := rawQUIC(b, res.BytesReceived, f)
		rawFile = max(rawFile, rf)
		f.Close()
		os.Remove(f.Name())
		b.Logf("clone %d: %.0f MB/s, %d ms CPU; raw %.0f MB/s: ratio %.3f", i, got/1e6, cpu.Milliseconds(), r/1e6, got/r)
		ratios = append(ratios, got/r)
		fileRatios = append(fileRatios, got/rf)
		b.StartTimer()
	}
	reportSync(b, best)
	secs := best.Duration.Seconds()
	b.ReportMetric(float64(best.BytesReceived)/secs/1e6, "MB/s")
	b.ReportMetric(float64(e.n)/secs, "records/s")
	b.ReportMetric(float64(bestCPU.Milliseconds()), "cpu-ms")
	b.ReportMetric(raw/1e6, "raw-quic-MB/s")
	b.ReportMetric(float64(rawCPU.Milliseconds()), "raw-cpu-ms")
	b.ReportMetric(median(ratios), "ratio-to-raw")
	b.ReportMetric(rawFile/1e6, "raw-quic-to-file-MB/s")
	b.ReportMetric(median(fileRatios), "ratio-to-raw-file")
}

// median returns the median of xs (which it sorts).
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawQUIC returns the throughput in bytes/s of one quic-go stream carrying
// n bytes over loopback with the same TLS setup, received into sink (nil:
// discarded).
func rawQUIC(b *testing.B, n int64, sink io.Writer) float64 {
	if sink == nil {
		sink = io.Discard
	}
	e := getBenchEnv(b)
	tr := &quic.Transport{}
	_ = tr
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(e.ts.srv.cert), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		st, err := qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		io.ReadFull(st, make([]byte, 1))
		buf := make([]byte, 64<<10)
		for left := n; left > 0; {
			k := min(int64(len(buf)), left)
			if _, err := st.Write(buf[:k]); err != nil {
				return
			}
			left -= k
		}
		st.Close()
		<-qc.Context().Done()
	}()
	conf, err := clientTLS("127.0.0.1", e.ts.fp, "", false)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	qc, err := quic.DialAddr(context.Background(), ln.Addr().String(), conf, &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	st, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	st.Write([]byte{1})
	got, err := io.Copy(sink, st)
	if err != nil || got != n {
		b.Fatalf("raw quic: %d of %d bytes: %v", got, n, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkSync measures a sync of a client at r0 to a server that
// changed d records since (a mix of updates, inserts and deletes), by the
// retained-base path and by the walk path.
func BenchmarkSync(b *testing.B) {
	e := getBenchEnv(b)
	// Settle the template once, as a client's store settles in the
	// background after its clone: the syncs measured below should not
	// compete with compacting the clone.
	if c, err := tree.Open(e.template, &tree.Options{NoSync: true}); err != nil {
		b.Fatal(err)
	} else {
		if err := c.Compact(context.Background()); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	for _, d := range []int{0, 1, 100, 10000} {
		changed := e.changeServer(b, d)
		for _, path := range []string{"retained", "walk"} {
			b.Run(fmt.Sprintf("d=%d/%s", d, path), func(b *testing.B) {
				var res *SyncResult
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					dir := filepath.Join(e.ts.dir, "client")
					os.RemoveAll(dir)
					if err := exec.Command("cp", "-r", e.template, dir).Run(); err != nil {
						b.Fatal(err)
					}
					c, err := tree.Open(dir, &tree.Options{NoSync: true})
					if err != nil {
						b.Fatal(err)
					}
					opts := e.ts.opts(alice)
					opts.ForceWalk = path == "walk"
					b.StartTimer()
					res, err = Sync(context.Background(), c, opts)
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					if ref(b, c, BaseRef) != ref(b, e.ts.store, HeadRef) {
						b.Fatal("not converged")
					}
					c.Close()
					b.StartTimer()
				}
				reportSync(b, res)
				if changed > 0 {
					b.ReportMetric(float64(res.BytesSent+res.BytesReceived)/float64(changed), "wire/changed")
					b.ReportMetric(float64(changed), "changed-B")
				}
			})
		}
	}
}

// changeServer resets the server to r0 and applies d changes: 60% updates,
// 20% inserts, 20% deletes. It returns the bytes of the changed records
// (key and new value; key only for a delete).
func (e *benchEnv) changeServer(b *testing.B, d int) int {
	ctx := context.Background()
	st := e.ts.store
	bt, _ := st.NewBatch()
	bt.SetRef(HeadRef, e.r0)
	if err := bt.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(d), 7))
	var edits []tree.Edit
	size := 0
	seen := map[int]bool{}
	for len(edits) < d {
		i := r.IntN(e.n)
		if seen[i] {
			continue
		}
		seen[i] = true
		switch x := r.IntN(10); {
		case x < 6:
			edits = append(edits, tree.Edit{Key: benchKey(i), Value: benchVal(r)})
			size += 116
		case x < 8:
			edits = append(edits, tree.Edit{Key: benchKey(e.n + i), Value: benchVal(r)})
			size += 116
		default:
			edits = append(edits, tree.Edit{Key: benchKey(i), Delete: true})
			size += 16
		}
	}
	if _, err := st.Update(ctx, HeadRef, edits); err != nil {
		b.Fatal(err)
	}
	return size
}

var _ = chunker.Config{}
