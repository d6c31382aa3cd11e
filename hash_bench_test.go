package arbor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/arbor-sync/arbor"
)

// BenchmarkHash measures what the choice of hash costs: each operation runs
// on an xxh3-128 store and a blake3-256 store in the same run, so their
// figures compare as a ratio (blake3 ÷ xxh3). Records: putBenchN() (env
// ARBOR_BENCH_N, default 100 000) of 16-byte keys and 100-byte values.
// Stores are NoSync; syncs run over QUIC on loopback.
//
//	go test -run XXX -bench BenchmarkHash -count 3 . | benchstat -col /hash -
func BenchmarkHash(b *testing.B) {
	n := putBenchN()
	ctx := context.Background()
	for _, alg := range []arbor.HashAlg{arbor.XXH3, arbor.BLAKE3} {
		name := "hash=" + map[arbor.HashAlg]string{arbor.XXH3: "xxh3", arbor.BLAKE3: "blake3"}[alg]

		b.Run("op=build/"+name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				dir := b.TempDir()
				b.StartTimer()
				db := preloadedHash(b, dir, n, alg)
				b.StopTimer()
				db.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})

		b.Run("op=update10k/"+name, func(b *testing.B) {
			db := preloadedHash(b, b.TempDir(), n, alg)
			defer db.Close()
			r := rand.New(rand.NewPCG(2, 2))
			for b.Loop() {
				batch := new(arbor.Batch)
				for range 10_000 {
					batch.Put(putKey(uint64(r.IntN(n))), putVal(r))
				}
				if err := db.Apply(ctx, batch); err != nil {
					b.Fatal(err)
				}
				if _, err := db.Root(ctx); err != nil { // the tree caught up
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(10_000*b.N)/b.Elapsed().Seconds(), "records/s")
		})

		b.Run("op=get/"+name, func(b *testing.B) {
			dir := b.TempDir()
			preloadedHash(b, dir, n, alg).Close()
			db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			r := rand.New(rand.NewPCG(3, 3))
			for range n { // warm the caches: the figure is a warm Get
				if _, err := db.Get(ctx, putKey(uint64(r.IntN(n)))); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if _, err := db.Get(ctx, putKey(uint64(r.IntN(n)))); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
		})

		b.Run("op=clone/"+name, func(b *testing.B) {
			srv, opts := serveForBench(b, n, alg)
			defer srv.Close()
			for b.Loop() {
				b.StopTimer()
				c, err := arbor.Open(b.TempDir(), &arbor.Options{NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := c.Sync(ctx, opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if c.Hash() != alg {
					b.Fatalf("clone of a %s server is %s", alg, c.Hash())
				}
				c.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})

		b.Run("op=sync1000/"+name, func(b *testing.B) {
			srv, opts := serveForBench(b, n, alg)
			defer srv.Close()
			c, err := arbor.Open(b.TempDir(), &arbor.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Sync(ctx, opts); err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(4, 4))
			for b.Loop() {
				b.StopTimer()
				batch := new(arbor.Batch)
				for range 1000 {
					batch.Put(putKey(uint64(r.IntN(n))), putVal(r))
				}
				if err := srv.db.Apply(ctx, batch); err != nil {
					b.Fatal(err)
				}
				if _, err := srv.db.Root(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := c.Sync(ctx, opts)
				if err != nil {
					b.Fatal(err)
				}
				if res.Pulled == 0 {
					b.Fatalf("a sync after 1000 changes pulled nothing: %+v", res)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/sync")
		})
	}
}

// preloadedHash is preloaded for a NoSync store of the given hash.
func preloadedHash(b *testing.B, dir string, n int, alg arbor.HashAlg) *arbor.DB {
	return preloadedWith(b, dir, n, &arbor.Options{NoSync: true, Hash: alg})
}

type benchServer struct {
	db     *arbor.DB
	cancel context.CancelFunc
	done   chan error
}

func (s *benchServer) Close() {
	s.cancel()
	<-s.done
	s.db.Close()
}

// serveForBench serves a store of n records on loopback.
func serveForBench(b *testing.B, n int, alg arbor.HashAlg) (*benchServer, arbor.SyncOptions) {
	b.Helper()
	dir := b.TempDir()
	db := preloadedHash(b, filepath.Join(dir, "data"), n, alg)
	const tok = "tok-bench-0123456789"
	srv, err := arbor.NewServer(db, arbor.ServerOptions{Tokens: []arbor.Token{{Token: tok, ClientID: "bench"}}, CertDir: filepath.Join(dir, "cert")})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	opts := arbor.SyncOptions{Server: srv.Addr().String(), Token: tok, Fingerprint: srv.Fingerprint()}
	if testing.Verbose() {
		fmt.Printf("serving %d %s records on %s\n", n, alg, opts.Server)
	}
	return &benchServer{db: db, cancel: cancel, done: done}, opts
}
