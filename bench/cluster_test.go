package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/cluster"
	"github.com/arbor-sync/arbor/internal/clustertest"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The cluster benchmarks (issue 16): a cluster of Arbor servers over a
// real 3-member etcd and a real SeaweedFS S3 gateway (internal/clustertest),
// each figure measured in the same run against a single-node Arbor server
// holding the same records (the sync section's syncEnv: W(n, d) with the
// changed side as head and the base retained). Run with
//
//	export ARBOR_SEAWEEDFS=$(bash .ci/seaweedfs.sh)
//	go test -run '^$' -bench Cluster -benchtime 1x -count 3 ./bench/
//
// Environment: ARBOR_BENCH_CLUSTER_N (records, default 10^5),
// ARBOR_BENCH_CLUSTER_D (changed records, default 1000),
// ARBOR_BENCH_CLUSTER_CLIENTS (concurrent pushers, default 20),
// ARBOR_BENCH_CLUSTER_ROUNDS (pushes per client, default 5),
// ARBOR_BENCH_CLUSTER_EDITS (records per push, default 10),
// ARBOR_BENCH_CLUSTER_REPS (single-node and warm clones, pulls and pushes
// per iteration, interleaved; their medians are reported, default 5),
// ARBOR_BENCH_SYNC=1 (the single-node server and the clients fsync every
// commit; default NoSync).
//
// Durability, stated with every figure (the "durability" metric is 1 for
// Sync, 0 for NoSync, of the single-node server and the clients): a
// cluster server's cache is Pebble NoSync (cluster.Open fixes it: the cache
// is disposable), the test etcd runs with UnsafeNoFsync and SeaweedFS
// without -volume.fsync; a cluster push is acknowledged after its PUT and
// its etcd transaction returned.
//
// ns/op is the whole iteration (setup included) and not a figure; the
// figures are the reported metrics.
func BenchmarkCluster(b *testing.B) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	// Pebble's default logger (the cluster's pack index opens with it)
	// writes "Found 0 WALs" to the standard log, in between a benchmark's
	// name and its figures.
	log.SetOutput(io.Discard)
	b.Cleanup(func() { log.SetOutput(os.Stderr) })
	n := envInt(b, "ARBOR_BENCH_CLUSTER_N", 100_000)
	d := envInt(b, "ARBOR_BENCH_CLUSTER_D", 1000)
	ctx := context.Background()

	etcd, s3 := clustertest.Env(b)
	cfg := &Config{Suite: "cluster", Seed: 1, ValueSize: 100, TmpDir: b.TempDir(), Sync: os.Getenv("ARBOR_BENCH_SYNC") == "1", Retain: 64}
	w, err := NewWorkload(n, d, cfg.ValueSize, cfg.Seed, false)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	e, err := newSyncEnv(ctx, cfg, w, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	cb := &clusterBench{e: e, etcd: etcd, s3: s3, bucket: s3.Bucket(b), retain: cfg.Retain, clients: envInt(b, "ARBOR_BENCH_CLUSTER_CLIENTS", 20)}
	cb.tokens = []arbornet.Token{{Token: e.token, ClientID: "bench-client"}}
	for i := range cb.clients {
		cb.tokens = append(cb.tokens, arbornet.Token{Token: fmt.Sprintf("bench-token-%02d", i), ClientID: fmt.Sprintf("bench-client-%02d", i)})
	}
	e.srv.SetTokens(cb.tokens)
	built := time.Since(start)

	// The first server takes the single-node server's certificate, so one
	// fingerprint (e.fp) pins both; then the single-node store's base and
	// changed roots become the cluster's heads in turn (base retained).
	start = time.Now()
	if cb.warm, err = cb.start(ctx, filepath.Join(e.dir, "cert")); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cb.warm.stop)
	st, err := cb.warm.c.Import(ctx, e.store, cb.warm.c.State().Head, e.base)
	if err != nil {
		b.Fatalf("import the base: %v", err)
	}
	if st, err = cb.warm.c.Import(ctx, e.store, st.Head, e.changed); err != nil {
		b.Fatalf("import the changed side: %v", err)
	}
	imported := time.Since(start)
	is := cb.warm.c.Stats()
	// Warm the first server's cache: one clone through it (skipped with
	// ARBOR_BENCH_CLUSTER_WARM=0, for the 10^8 run of Pull alone, whose
	// "warm" server then holds only what the import left in its cache).
	if os.Getenv("ARBOR_BENCH_CLUSTER_WARM") != "0" {
		if _, _, err := e.syncChecked(ctx, cb.warm.addr, "", false, e.changed, cb.warm.head); err != nil {
			b.Fatalf("warming clone: %v", err)
		}
	}
	b.Logf("W(%d, %d): single-node store built in %v; imported into the cluster in %v (%d PUTs, %.1f MB, %d etcd txns); durability: %s",
		n, d, built.Round(time.Millisecond), imported.Round(time.Millisecond), is.Puts, float64(is.PutBytes)/1e6, is.Txns, durability(cfg.Sync))
	if st, err := cb.warm.c.Status(ctx); err == nil {
		b.Logf("cluster after the import: %d packs, %.1f MB in S3, %d records at the head", st.Packs, float64(st.PackBytes)/1e6, st.Records)
	}

	b.Run("Clone", cb.benchClone)
	b.Run("Pull", cb.benchPull)
	b.Run("Push", cb.benchPush)
	b.Run("Latency", cb.benchLatency)
	b.Run("Throughput", func(b *testing.B) {
		for _, mode := range []string{"single", "servers=1", "servers=3"} {
			b.Run(mode, func(b *testing.B) { cb.benchThroughput(b, mode) })
		}
	})
}

func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// clusterBench is the shared environment of the cluster benchmarks.
type clusterBench struct {
	e       *syncEnv
	etcd    *clustertest.Etcd
	s3      *clustertest.S3
	bucket  string
	retain  int
	clients int
	tokens  []arbornet.Token
	warm    *clusterMember // serves every figure but the cold ones; its cache holds the head
	seq     int
}

// clusterMember is one Arbor server of the cluster, serving on loopback.
type clusterMember struct {
	c    *cluster.Cluster
	srv  *arbornet.Server
	addr string
	open time.Duration // cluster.Open: configuration, pack indexes, head
	stop func()
}

// head is the member's view of the cluster's head.
func (m *clusterMember) head() (node.Hash, error) { return m.c.State().Head, nil }

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// start opens a new member with a fresh, empty cache directory and serves
// it. certDir empty: the member's own (it takes the cluster's certificate).
func (cb *clusterBench) start(ctx context.Context, certDir string) (*clusterMember, error) {
	cb.seq++
	dir := filepath.Join(cb.e.dir, fmt.Sprintf("cluster-server-%d", cb.seq))
	o := cluster.Options{Etcd: cb.etcd.Endpoints(), S3: cb.s3.Endpoint(), Bucket: cb.bucket, AccessKey: cb.s3.AccessKey, SecretKey: cb.s3.SecretKey,
		Region: cb.s3.Region, Name: "bench", Dir: dir, Retain: cb.retain, GCGrace: time.Hour, Logger: quietLog}
	t0 := time.Now()
	c, err := cluster.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	open := time.Since(t0)
	srv, err := c.NewServer(ctx, arbornet.ServerOptions{Tokens: cb.tokens, CertDir: certDir})
	if err != nil {
		c.Close()
		return nil, err
	}
	if srv.Fingerprint() != cb.e.fp {
		c.Close()
		return nil, fmt.Errorf("cluster server presents %s, the single-node server %s", srv.Fingerprint(), cb.e.fp)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		c.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	var once sync.Once
	m := &clusterMember{c: c, srv: srv, addr: srv.Addr().String(), open: open}
	m.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			c.Close()
			os.RemoveAll(dir)
		})
	}
	return m, nil
}

// resetCluster makes root the cluster's head again (after a push), through
// the warm member.
func (cb *clusterBench) resetCluster(ctx context.Context, root node.Hash) error {
	m := cb.warm
	for range 10 {
		if err := m.c.Current(ctx); err != nil {
			return err
		}
		st := m.c.State()
		if st.Head == root {
			return nil
		}
		if _, err := m.c.Commit(ctx, st.Head, root); err == nil || !errors.Is(err, cluster.ErrHeadMoved) {
			return err
		}
	}
	return fmt.Errorf("reset the cluster's head: it kept moving")
}

func statsDelta(a, b cluster.Stats) cluster.Stats {
	return cluster.Stats{Gets: b.Gets - a.Gets, Puts: b.Puts - a.Puts, GetBytes: b.GetBytes - a.GetBytes, PutBytes: b.PutBytes - a.PutBytes,
		Txns: b.Txns - a.Txns, Reads: b.Reads - a.Reads, Commits: b.Commits - a.Commits, Conflicts: b.Conflicts - a.Conflicts}
}

func addStats(a, b cluster.Stats) cluster.Stats {
	return cluster.Stats{Gets: a.Gets + b.Gets, Puts: a.Puts + b.Puts, GetBytes: a.GetBytes + b.GetBytes, PutBytes: a.PutBytes + b.PutBytes,
		Txns: a.Txns + b.Txns, Reads: a.Reads + b.Reads, Commits: a.Commits + b.Commits, Conflicts: a.Conflicts + b.Conflicts}
}

// metrics collects per-iteration samples and reports their medians.
type metrics struct {
	order []string
	s     map[string][]float64
}

func (m *metrics) add(unit string, v float64) {
	if m.s == nil {
		m.s = map[string][]float64{}
	}
	if _, ok := m.s[unit]; !ok {
		m.order = append(m.order, unit)
	}
	m.s[unit] = append(m.s[unit], v)
}

func (m *metrics) report(b *testing.B, noSync bool) {
	for _, u := range m.order {
		b.ReportMetric(NewStat(m.s[u]).Median, u)
	}
	dur := 1.0
	if noSync {
		dur = 0
	}
	b.ReportMetric(dur, "durability")
}

// benchClone: a clone of the head (the changed side, n + i − d records)
// from the single-node server, then from a new cluster server (empty cache:
// cold), then from the same server again (warm). The single-node and warm
// clones are repeated REPS times, interleaved, and their medians taken.
// Then a probe: another new server reads the head's whole tree level by
// level, each level's missing nodes in one Store.Nodes call (one Fetch),
// which is what a clone from a cold cache would cost if the server fetched
// a branch's children together instead of one node at a time.
func (cb *clusterBench) benchClone(b *testing.B) {
	ctx := context.Background()
	e := cb.e
	reps := envInt(b, "ARBOR_BENCH_CLUSTER_REPS", 5)
	var m metrics
	for range b.N {
		cloneSingle := func() (float64, error) {
			_, t, err := e.syncOnce(ctx, e.srv.Addr().String(), "", false, e.changed)
			return t.Seconds(), err
		}
		first, err := cloneSingle()
		if err != nil {
			b.Fatalf("single-node clone: %v", err)
		}
		mem, err := cb.start(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		s0 := mem.c.Stats()
		w0 := childCPU("weed")
		res, cold, err := e.syncChecked(ctx, mem.addr, "", false, e.changed, mem.head)
		if err != nil {
			mem.stop()
			b.Fatalf("cold clone: %v", err)
		}
		s1 := mem.c.Stats()
		if w1 := childCPU("weed"); w0 >= 0 && w1 >= 0 {
			m.add("cold-S3-cpu-s", w1-w0)
		}
		singles, warms := []float64{first}, []float64(nil)
		for r := range reps {
			if r > 0 {
				t, err := cloneSingle()
				if err != nil {
					mem.stop()
					b.Fatalf("single-node clone: %v", err)
				}
				singles = append(singles, t)
			}
			_, t, err := e.syncChecked(ctx, mem.addr, "", false, e.changed, mem.head)
			if err != nil {
				mem.stop()
				b.Fatalf("warm clone: %v", err)
			}
			warms = append(warms, t.Seconds())
		}
		s2 := mem.c.Stats()
		mem.stop()
		c, wm := statsDelta(s0, s1), statsDelta(s1, s2)
		single, warm := NewStat(singles).Median, NewStat(warms).Median
		m.add("single-s", single)
		m.add("cold-s", cold.Seconds())
		m.add("warm-s", warm)
		m.add("cold-ratio", single/cold.Seconds())
		m.add("warm-ratio", single/warm)
		m.add("cold-open-s", mem.open.Seconds())
		m.add("open-GETs", float64(s0.Gets))
		m.add("cold-GETs", float64(c.Gets))
		m.add("cold-GET-MB", float64(c.GetBytes)/1e6)
		m.add("cold-ms/GET", cold.Seconds()*1e3/float64(c.Gets))
		m.add("warm-GETs", float64(wm.Gets))
		m.add("records", float64(res.Pulled))

		// The batched-read probe.
		probe, err := cb.start(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		p0 := probe.c.Stats()
		t0 := time.Now()
		nodes, err := readLevels(ctx, probe.c.Store(), e.changed)
		pt := time.Since(t0)
		pd := statsDelta(p0, probe.c.Stats())
		probe.stop()
		if err != nil {
			b.Fatalf("batched cold read: %v", err)
		}
		m.add("batched-read-s", pt.Seconds())
		m.add("batched-read-GETs", float64(pd.Gets))
		m.add("nodes", float64(nodes))
	}
	m.report(b, e.noSync)
}

// readLevels reads every node of root's tree, one level at a time, each
// level's nodes in calls of up to 4096 hashes, and returns how many.
func readLevels(ctx context.Context, s *tree.Store, root node.Hash) (int, error) {
	level := []node.Hash{root}
	total := 0
	for len(level) > 0 {
		var next []node.Hash
		for len(level) > 0 {
			part := level[:min(len(level), 4096)]
			level = level[len(part):]
			ns, err := s.Nodes(ctx, part)
			if err != nil {
				return total, err
			}
			total += len(ns)
			for _, n := range ns {
				if n.IsLeaf() {
					continue
				}
				for i := range n.Len() {
					h, _ := n.Child(i)
					next = append(next, h)
				}
			}
		}
		level = next
	}
	return total, nil
}

// benchPull: the d changed records pulled by the retained-base path, by a
// client at the base: from the single-node server, the warm cluster server
// (its cache holds both trees) and a new cluster server (empty cache: every
// node the diff reads is a ranged GET).
func (cb *clusterBench) benchPull(b *testing.B) {
	ctx := context.Background()
	e := cb.e
	var m metrics
	pull := func(addr string, head func() (node.Hash, error)) (time.Duration, error) {
		res, t, err := e.syncChecked(ctx, addr, e.template, false, e.changed, head)
		if err == nil && (res.Path != "retained" || res.Pulled != e.w.D) {
			err = fmt.Errorf("pull took the %q path and pulled %d records, want retained and %d", res.Path, res.Pulled, e.w.D)
		}
		return t, err
	}
	reps := envInt(b, "ARBOR_BENCH_CLUSTER_REPS", 5)
	for range b.N {
		var singles, warms []float64
		var wd cluster.Stats
		for r := range reps {
			single, err := pull(e.srv.Addr().String(), func() (node.Hash, error) { return e.store.Root("head") })
			if err != nil {
				b.Fatalf("single-node pull: %v", err)
			}
			w0 := cb.warm.c.Stats()
			warm, err := pull(cb.warm.addr, cb.warm.head)
			if err != nil {
				b.Fatalf("warm cluster pull: %v", err)
			}
			if r == 0 {
				wd = statsDelta(w0, cb.warm.c.Stats())
			}
			singles, warms = append(singles, single.Seconds()), append(warms, warm.Seconds())
		}
		single, warm := NewStat(singles).Median, NewStat(warms).Median
		mem, err := cb.start(ctx, "")
		if err != nil {
			b.Fatal(err)
		}
		c0 := mem.c.Stats()
		cold, err := pull(mem.addr, mem.head)
		cd := statsDelta(c0, mem.c.Stats())
		mem.stop()
		if err != nil {
			b.Fatalf("cold cluster pull: %v", err)
		}
		m.add("single-s", single)
		m.add("warm-s", warm)
		m.add("cold-s", cold.Seconds())
		m.add("warm-x", warm/single)
		m.add("cold-x", cold.Seconds()/single)
		m.add("warm-GETs", float64(wd.Gets))
		m.add("warm-PUTs", float64(wd.Puts))
		m.add("warm-txns", float64(wd.Txns))
		m.add("warm-reads", float64(wd.Reads))
		m.add("cold-GETs", float64(cd.Gets))
		m.add("cold-GET-KB", float64(cd.GetBytes)/1e3)
		m.add("cold-PUTs", float64(cd.Puts))
		m.add("cold-txns", float64(cd.Txns))
		m.add("cold-reads", float64(cd.Reads))
	}
	m.report(b, e.noSync)
}

// benchPush: a client that last synced at the head pushes d local changes
// (the inverse of W's edits), to the single-node server and through the
// warm cluster server; after each, the server's head is set back.
func (cb *clusterBench) benchPush(b *testing.B) {
	ctx := context.Background()
	e := cb.e
	var m metrics
	push := func(addr string, head func() (node.Hash, error)) (time.Duration, error) {
		res, t, err := e.syncChecked(ctx, addr, e.pushTmpl, false, e.base, head)
		if err == nil && (res.Pushed != e.w.D || res.Accepted != e.w.D) {
			err = fmt.Errorf("push: %d changes pushed, %d accepted, want %d", res.Pushed, res.Accepted, e.w.D)
		}
		return t, err
	}
	reps := envInt(b, "ARBOR_BENCH_CLUSTER_REPS", 5)
	for range b.N {
		var singles, clus []float64
		var sd cluster.Stats // the pushes' traffic, without the resets'
		for range reps {
			single, err := push(e.srv.Addr().String(), func() (node.Hash, error) { return e.store.Root("head") })
			if rerr := e.resetServer(ctx, e.changed); err == nil {
				err = rerr
			}
			if err != nil {
				b.Fatalf("single-node push: %v", err)
			}
			s0 := cb.warm.c.Stats()
			clu, err := push(cb.warm.addr, cb.warm.head)
			sd = addStats(sd, statsDelta(s0, cb.warm.c.Stats()))
			if rerr := cb.resetCluster(ctx, e.changed); err == nil {
				err = rerr
			}
			if err != nil {
				b.Fatalf("cluster push: %v", err)
			}
			singles, clus = append(singles, single.Seconds()), append(clus, clu.Seconds())
		}
		if sd.Commits == 0 {
			b.Fatalf("cluster push committed nothing: %+v", sd)
		}
		single, clu := NewStat(singles).Median, NewStat(clus).Median
		commits := float64(sd.Commits)
		m.add("single-s", single)
		m.add("cluster-s", clu)
		m.add("x", clu/single)
		m.add("pushes", float64(reps))
		m.add("commits", commits)
		m.add("PUTs/commit", float64(sd.Puts)/commits)
		m.add("txns/commit", float64(sd.Txns)/commits)
		m.add("PUT-KB/commit", float64(sd.PutBytes)/1e3/commits)
		m.add("GETs/push", float64(sd.Gets)/float64(reps))
		m.add("reads/push", float64(sd.Reads)/float64(reps))
	}
	m.report(b, e.noSync)
}

// benchThroughput: cb.clients clients, each starting from a copy of the
// base and synced once (not timed), then pushing ROUNDS times EDITS
// records of its own (scattered keys, no two clients share one) at once;
// commits/s counts the acknowledged pushes (each one commit: one Pebble
// batch on the single-node server, one etcd transaction on a cluster).
// mode: "single" (the single-node server), "servers=1" (the warm cluster
// server) or "servers=3" (it and two more; client i uses server i mod 3).
func (cb *clusterBench) benchThroughput(b *testing.B, mode string) {
	ctx := context.Background()
	e := cb.e
	rounds := envInt(b, "ARBOR_BENCH_CLUSTER_ROUNDS", 5)
	edits := envInt(b, "ARBOR_BENCH_CLUSTER_EDITS", 10)
	var members []*clusterMember
	var addrs []string
	serverHead := func() (node.Hash, error) { return e.store.Root("head") }
	switch mode {
	case "single":
		addrs = []string{e.srv.Addr().String()}
	case "servers=1", "servers=3":
		members = []*clusterMember{cb.warm}
		for len(members) < map[string]int{"servers=1": 1, "servers=3": 3}[mode] {
			mem, err := cb.start(ctx, "")
			if err != nil {
				b.Fatal(err)
			}
			defer mem.stop()
			members = append(members, mem)
		}
		for _, mem := range members {
			addrs = append(addrs, mem.addr)
		}
		serverHead = func() (node.Hash, error) {
			if err := cb.warm.c.Current(ctx); err != nil {
				return node.Hash{}, err
			}
			return cb.warm.head()
		}
	}
	var m metrics
	for iter := range b.N {
		w0 := childCPU("weed")
		r, err := cb.throughput(ctx, addrs, members, serverHead, rounds, edits, uint64(iter))
		w1 := childCPU("weed") // includes the final syncs' checks
		if err != nil {
			b.Fatal(err)
		}
		if mode == "single" {
			err = e.resetServer(ctx, e.changed)
		} else {
			err = cb.resetCluster(ctx, e.changed)
		}
		if err != nil {
			b.Fatal(err)
		}
		secs := r.elapsed.Seconds()
		m.add("commits/s", float64(r.pushes)/secs)
		m.add("records/s", float64(r.accepted)/secs)
		m.add("s", secs)
		m.add("walks", float64(r.walks))
		if members != nil {
			m.add("conflicts", float64(r.stats.Conflicts))
			m.add("txns/commit", float64(r.stats.Txns)/float64(r.stats.Commits))
			m.add("PUTs/commit", float64(r.stats.Puts)/float64(r.stats.Commits))
			m.add("PUT-KB/commit", float64(r.stats.PutBytes)/1e3/float64(r.stats.Commits))
			m.add("GETs/commit", float64(r.stats.Gets)/float64(r.stats.Commits))
		}
		if w0 >= 0 && w1 >= 0 {
			m.add("S3-cpu-s", w1-w0)
		}
	}
	m.add("clients", float64(cb.clients))
	m.report(b, e.noSync)
}

type throughputResult struct {
	elapsed          time.Duration
	pushes, accepted int
	walks            int
	stats            cluster.Stats // summed over the members, during the timed phase
}

func (cb *clusterBench) throughput(ctx context.Context, addrs []string, members []*clusterMember, serverHead func() (node.Hash, error), rounds, edits int, seed uint64) (*throughputResult, error) {
	e := cb.e
	type client struct {
		s    *tree.Store
		dir  string
		opts arbornet.ClientOptions
		last map[string][]byte // the last value this client wrote, per key
	}
	cls := make([]*client, cb.clients)
	defer func() {
		for _, c := range cls {
			if c != nil {
				c.s.Close()
				os.RemoveAll(c.dir)
			}
		}
	}()
	for i := range cls {
		dir := e.scratch("pusher")
		if err := copyStore(e.template, dir); err != nil {
			return nil, err
		}
		s, err := tree.Open(dir, &tree.Options{NoSync: e.noSync})
		if err != nil {
			return nil, err
		}
		cls[i] = &client{s: s, dir: dir, last: map[string][]byte{},
			opts: arbornet.ClientOptions{Server: addrs[i%len(addrs)], Token: cb.tokens[1+i].Token, Fingerprint: e.fp}}
		if _, err := arbornet.Sync(ctx, s, cls[i].opts); err != nil {
			return nil, fmt.Errorf("client %d: first sync: %w", i, err)
		}
	}
	var before cluster.Stats
	for _, mem := range members {
		before = addStats(before, mem.c.Stats())
	}
	var (
		mu  sync.Mutex
		r   throughputResult
		wg  sync.WaitGroup
		err error
	)
	start := time.Now()
	for i, c := range cls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			keys := make([][]byte, edits) // this client's keys: fixed, scattered
			for j := range keys {
				k := make([]byte, KeySize)
				binary.BigEndian.PutUint64(k, uint64(rng.IntN(e.w.N))<<8|uint64(0x01+i))
				binary.BigEndian.PutUint64(k[8:], rng.Uint64())
				keys[j] = k
			}
			for round := range rounds {
				es := make([]tree.Edit, edits)
				for j := range es {
					v := e.w.Value(nil, i*1_000_000+round*edits+j, 7)
					es[j] = tree.Edit{Key: keys[j], Value: v}
					c.last[string(keys[j])] = v
				}
				if _, ferr := c.s.Update(ctx, arbornet.HeadRef, es); ferr != nil {
					mu.Lock()
					err = errors.Join(err, ferr)
					mu.Unlock()
					return
				}
				res, ferr := arbornet.Sync(ctx, c.s, c.opts)
				mu.Lock()
				if ferr == nil && (res.Pushed != edits || res.Accepted != edits) {
					ferr = fmt.Errorf("client %d round %d: %d pushed, %d accepted, want %d", i, round, res.Pushed, res.Accepted, edits)
				}
				if ferr != nil {
					err = errors.Join(err, ferr)
					mu.Unlock()
					return
				}
				r.pushes++
				r.accepted += res.Accepted
				if res.Path == "walk" {
					r.walks++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	if err != nil {
		return nil, err
	}
	for _, mem := range members {
		r.stats = addStats(r.stats, mem.c.Stats())
	}
	r.stats = statsDelta(before, r.stats)
	// Check: every client, synced once more, holds the server's head, and
	// it holds every client's last write.
	head, err := serverHead()
	if err != nil {
		return nil, err
	}
	for i, c := range cls {
		res, err := arbornet.Sync(ctx, c.s, c.opts)
		if err != nil {
			return nil, fmt.Errorf("client %d: final sync: %w", i, err)
		}
		if res.Root != head {
			return nil, fmt.Errorf("client %d: root %s after the final sync, server head %s", i, res.Root.Short(), head.Short())
		}
	}
	for i, c := range cls {
		for k, v := range c.last {
			got, err := cls[0].s.Get(ctx, head, []byte(k))
			if err != nil || !bytes.Equal(got, v) {
				return nil, fmt.Errorf("client %d's last write of %x is not in the head (%v)", i, k, err)
			}
		}
	}
	return &r, nil
}

// childCPU returns the CPU time (user and system, in seconds) used so far
// by this process's child named comm (the SeaweedFS process), or -1 if
// there is none or /proc cannot tell (not Linux).
func childCPU(comm string) float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	me := strconv.Itoa(os.Getpid())
	for _, ent := range ents {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime stime (fields 14 and 15).
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open || st[open+1:end] != comm {
			continue
		}
		f := strings.Fields(st[end+1:])
		if len(f) < 13 || f[1] != me {
			continue
		}
		ut, err1 := strconv.ParseFloat(f[11], 64)
		sy, err2 := strconv.ParseFloat(f[12], 64)
		if err1 != nil || err2 != nil {
			return -1
		}
		return (ut + sy) / 100 // USER_HZ: 100 on Linux
	}
	return -1
}

// benchLatency measures, on the same etcd and S3, the single requests a
// cluster server makes, for reading the other figures: a ranged GET of one
// 4 KiB node (what a cold server pays per node it lacks), PUTs of a small
// commit's pack (150 KB) and of a d = 1000 commit's (5 MB), an etcd
// compare-and-set transaction (one per commit) and a linearizable read
// (one per sync's handshake). Medians in milliseconds.
func (cb *clusterBench) benchLatency(b *testing.B) {
	ctx := context.Background()
	cli := cb.s3.Client(b)
	etcd := cb.etcd.Client(b)
	var m metrics
	rng := rand.New(rand.NewPCG(3, 4))
	blob := func(n int) []byte {
		p := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
		}
		return p
	}
	timeIt := func(n int, f func(i int) error) (float64, error) {
		var ts []float64
		for i := range n {
			t0 := time.Now()
			if err := f(i); err != nil {
				return 0, err
			}
			ts = append(ts, float64(time.Since(t0).Microseconds())/1e3)
		}
		return NewStat(ts).Median, nil
	}
	for range b.N {
		small, big := blob(150_000), blob(5_000_000)
		put := func(p []byte) func(int) error {
			return func(i int) error {
				_, err := cli.PutObject(ctx, cb.bucket, fmt.Sprintf("probe/%d-%d", len(p), i), bytes.NewReader(p), int64(len(p)), minio.PutObjectOptions{})
				return err
			}
		}
		putSmall, err := timeIt(20, put(small))
		if err != nil {
			b.Fatal(err)
		}
		putBig, err := timeIt(5, put(big))
		if err != nil {
			b.Fatal(err)
		}
		get, err := timeIt(50, func(i int) error {
			o := minio.GetObjectOptions{}
			off := int64(i) * 4096
			if err := o.SetRange(off, off+4095); err != nil {
				return err
			}
			obj, err := cli.GetObject(ctx, cb.bucket, "probe/5000000-0", o)
			if err != nil {
				return err
			}
			defer obj.Close()
			got, err := io.ReadAll(obj)
			if err == nil && len(got) != 4096 {
				err = fmt.Errorf("ranged GET: %d bytes", len(got))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		key := "/bench-probe/head"
		resp, err := etcd.Put(ctx, key, "0")
		if err != nil {
			b.Fatal(err)
		}
		rev := resp.Header.Revision
		txn, err := timeIt(50, func(i int) error {
			r, err := etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, strconv.Itoa(i))).Commit()
			if err == nil && !r.Succeeded {
				err = errors.New("probe transaction lost its compare")
			}
			if err == nil {
				rev = r.Header.Revision
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		read, err := timeIt(50, func(int) error { _, err := etcd.Get(ctx, key); return err })
		if err != nil {
			b.Fatal(err)
		}
		m.add("GET-4KiB-ms", get)
		m.add("PUT-150KB-ms", putSmall)
		m.add("PUT-5MB-ms", putBig)
		m.add("etcd-txn-ms", txn)
		m.add("etcd-read-ms", read)
	}
	m.report(b, cb.e.noSync)
}
