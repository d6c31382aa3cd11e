package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/internal/clustertest"
	arbornet "github.com/arbor-sync/arbor/net"
)

// TestCLICluster runs the cluster scenarios of the arbor command on one
// 3-member etcd and one SeaweedFS S3 gateway (which takes seconds to
// start), each scenario with its own bucket and cluster name. Every arbor
// is a process of the built binary.
func TestCLICluster(t *testing.T) {
	etcd, s3 := cliClusterEnv(t)
	for i, sc := range []struct {
		name string
		run  func(*testing.T, *cliCluster)
	}{
		{"ImportServeExport", testCLIClusterImportServeExport},
		{"KillServerMidClone", testCLIClusterKillMidClone},
		{"KillServerMidPush", testCLIClusterKillMidPush},
		{"Errors", testCLIClusterErrors},
	} {
		t.Run(sc.name, func(t *testing.T) {
			start := time.Now()
			sc.run(t, newCLICluster(t, etcd, s3, fmt.Sprintf("cli%d", i)))
			t.Logf("%s took %s", sc.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// cliClusterEnv starts a 3-member etcd and a SeaweedFS S3 gateway and
// gives this test's arbor processes S3's credentials in the standard AWS
// variables.
func cliClusterEnv(t *testing.T) (*clustertest.Etcd, *clustertest.S3) {
	etcd, s3 := clustertest.Env(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s3.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.SecretKey)
	t.Setenv("AWS_REGION", s3.Region)
	t.Setenv("ARBOR_TOKEN", "")
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	return etcd, s3
}

// newCLICluster names a new cluster (its own bucket) on etcd and s3, with
// a tokens file for its servers and the matching client token file.
func newCLICluster(t *testing.T, etcd *clustertest.Etcd, s3 *clustertest.S3, name string) *cliCluster {
	dir := t.TempDir()
	c := &cliCluster{
		dir:     dir,
		flags:   []string{"--etcd", strings.Join(etcd.Endpoints(), ","), "--s3", s3.Endpoint(), "--bucket", s3.Bucket(t), "--cluster", name},
		tokens:  filepath.Join(dir, "tokens"),
		tokFile: filepath.Join(dir, "client.token"),
	}
	const tok = "tok-cluster-0123456789abcdef"
	if err := os.WriteFile(c.tokens, []byte(tok+" client\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// cliCluster is one scenario's cluster: its flags, a tokens file and the
// servers started on it.
type cliCluster struct {
	dir      string
	flags    []string // --etcd … --s3 … --bucket … --cluster …
	tokens   string   // the servers' tokens file
	tokFile  string   // the client's token file
	fp       string   // the cluster's fingerprint, once a server runs
	servers  []*served
	serveArg [][]string
}

// serve starts one more server with its own cache dir; the first one's
// fingerprint becomes the cluster's and every later one must present it.
func (c *cliCluster) serve(t *testing.T, extra ...string) *served {
	t.Helper()
	cache := filepath.Join(c.dir, fmt.Sprintf("cache-%d", len(c.servers)+1))
	args := append([]string{"--db", cache, "serve", "--listen", "127.0.0.1:0", "--tokens", c.tokens}, c.flags...)
	s := startServe(t, append(args, extra...)...)
	if c.fp == "" {
		c.fp = s.fp
	} else if s.fp != c.fp {
		t.Fatalf("server %d presents fingerprint %s, the cluster's first server %s", len(c.servers)+1, s.fp, c.fp)
	}
	c.servers = append(c.servers, s)
	return s
}

// serve3 starts three servers, the first with extra flags.
func (c *cliCluster) serve3(t *testing.T, extra ...string) (a, b, cc *served) {
	t.Helper()
	a = c.serve(t, extra...)
	return a, c.serve(t), c.serve(t)
}

// addrs is the comma-separated list of the servers' addresses.
func (c *cliCluster) addrs() string {
	var as []string
	for _, s := range c.servers {
		as = append(as, s.addr)
	}
	return strings.Join(as, ",")
}

type clusterStatusJSON struct {
	Head    string
	Records uint64
	Packs   int
	Servers []struct{ ID, Addr string }
}

func (c *cliCluster) status(t *testing.T) clusterStatusJSON {
	t.Helper()
	out := mustRun(t, "", append([]string{"cluster", "status", "--json"}, c.flags...)...)
	var st clusterStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status --json: %v in %q", err, out)
	}
	return st
}

type clusterExportJSON struct {
	Cluster, Head, Root, DB string
	Records                 uint64
}

// export runs 'cluster export' into a new dir and checks what it reports.
func (c *cliCluster) export(t *testing.T, dir string) clusterExportJSON {
	t.Helper()
	out := mustRun(t, "", append([]string{"--db", dir, "cluster", "export", "--json"}, c.flags...)...)
	var ex clusterExportJSON
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("cluster export --json: %v in %q", err, out)
	}
	if ex.Root != ex.Head || ex.Root == "" || ex.DB != dir {
		t.Fatalf("cluster export: %+v", ex)
	}
	if got := localRoot(t, dir); got != ex.Root {
		t.Fatalf("the exported store's root is %s; export said %s", got, ex.Root)
	}
	mustVerify(t, dir, ex.Root)
	return ex
}

// clusterSync is a line of 'sync --json'.
type clusterSync struct {
	Pulled, Pushed, Accepted, Failovers int
	Root, Server, Error                 string
}

// sync runs 'sync --json' of db with servers (a comma-separated list).
func (c *cliCluster) sync(t *testing.T, db, servers string) clusterSync {
	t.Helper()
	out := mustRun(t, "", "--db", db, "sync", "--server", servers, "--token-file", c.tokFile, "--fingerprint", c.fp, "--json")
	var l clusterSync
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("sync --json: %v in %q", err, out)
	}
	return l
}

func localRoot(t *testing.T, db string) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, "", "--db", db, "root"))
}

func mustVerify(t *testing.T, db, root string) {
	t.Helper()
	if out := mustRun(t, "", "--db", db, "verify"); !strings.Contains(out, "ok: root "+root) {
		t.Fatalf("verify %s: %q, want root %s", db, out, root)
	}
}

// randomRecords returns n records with random keys (of mixed lengths and
// prefixes) and random printable values, a few of them longer than a
// node holds inline.
func randomRecords(r *rand.Rand, n int) map[string]string {
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:"
	str := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		return string(b)
	}
	prefixes := []string{"user/", "order/", "k", "x/y/", ""}
	m := make(map[string]string, n)
	for len(m) < n {
		k := prefixes[r.IntN(len(prefixes))] + str(1+r.IntN(24))
		vlen := r.IntN(200)
		if r.IntN(200) == 0 {
			vlen = 2000 + r.IntN(6000) // out of line: value blobs
		}
		m[k] = str(vlen)
	}
	return m
}

// tsv writes m as KEY<TAB>VALUE lines (in random order: the map's).
func tsv(m map[string]string) string {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k + "\t" + v + "\n")
	}
	return b.String()
}

// sortedTSV is what 'arbor export' prints for m.
func sortedTSV(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "\t" + m[k] + "\n")
	}
	return b.String()
}

func writeFile(t *testing.T, path, s string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testCLIClusterImportServeExport: three servers of one cluster present one
// certificate; a single-node store of random records (some deleted after
// the import) moves in with 'cluster import' with its root; clones through
// each server and 'cluster export' give that root back, and the export
// verifies and serves as a single-node store. Changes pushed through
// different servers give the head that the same records give in a new
// single-node store.
func testCLIClusterImportServeExport(t *testing.T, c *cliCluster) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	want := randomRecords(r, 3000)
	single := filepath.Join(c.dir, "single")
	mustRun(t, "", "--db", single, "import", writeFile(t, filepath.Join(c.dir, "records.tsv"), tsv(want)))
	var dels []string
	for k := range want {
		if len(dels) == 15 {
			break
		}
		dels = append(dels, k)
	}
	for _, k := range dels {
		mustRun(t, "", "--db", single, "del", k)
		delete(want, k)
	}
	root := localRoot(t, single)

	a, b, cc := c.serve3(t)
	// The first server stored its certificate in etcd; the others took it.
	first, err := os.ReadFile(filepath.Join(c.dir, "cache-1", "cert", arbornet.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		if pem, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("cache-%d", i), "cert", arbornet.CertFile)); err != nil || string(pem) != string(first) {
			t.Fatalf("server %d's certificate differs from the first server's (%v)", i, err)
		}
	}
	if st := c.status(t); len(st.Servers) != 3 || st.Packs != 0 {
		t.Fatalf("status of a new cluster: %+v; want 3 servers, no packs", st)
	}
	out := mustRun(t, "", append([]string{"--db", single, "cluster", "import"}, c.flags...)...)
	if !strings.Contains(out, "head "+root) {
		t.Fatalf("cluster import: %q; want head %s", out, root)
	}
	st := c.status(t)
	if st.Head != root || len(st.Servers) != 3 || st.Packs == 0 || st.Records != uint64(len(want)) {
		t.Fatalf("status after the import: %+v; want head %s, 3 servers, packs, %d records", st, root, len(want))
	}
	addrs := map[string]bool{}
	for _, s := range st.Servers {
		addrs[s.Addr] = true
	}
	for _, s := range c.servers {
		if !addrs[s.addr] {
			t.Fatalf("server %s is not in the status's servers %+v", s.addr, st.Servers)
		}
		// Each server answers with the head, pinned by the one fingerprint.
		out := mustRun(t, "", "root", "--server", s.addr, "--token-file", c.tokFile, "--fingerprint", c.fp)
		if got := strings.TrimSpace(out); got != root {
			t.Fatalf("root --server %s = %s, want %s", s.addr, got, root)
		}
	}

	// A clone through each server.
	clones := make([]string, 3)
	for i, s := range c.servers {
		clones[i] = filepath.Join(c.dir, fmt.Sprintf("clone-%d", i+1))
		if l := c.sync(t, clones[i], s.addr); l.Root != root || l.Pulled != len(want) || l.Server != s.addr {
			t.Fatalf("clone through %s: %+v; want root %s, %d pulled", s.addr, l, root, len(want))
		}
	}
	if got := mustRun(t, "", "--db", clones[1], "export"); got != sortedTSV(want) {
		t.Fatal("the records of a clone differ from the imported ones")
	}

	// Out again: a new single-node store with the same root, which a plain
	// 'arbor serve' serves.
	exp := filepath.Join(c.dir, "exported")
	if ex := c.export(t, exp); ex.Head != root || ex.Records != uint64(len(want)) {
		t.Fatalf("export: %+v; want head %s, %d records", ex, root, len(want))
	}
	single2 := startServe(t, "--db", exp, "serve", "--listen", "127.0.0.1:0", "--tokens", c.tokens)
	if !strings.Contains(single2.stdout.String(), "root "+root) {
		t.Fatalf("serving the export: %q; want root %s", single2.stdout.String(), root)
	}
	if code := single2.stop(t, os.Interrupt, 10*time.Second); code != 0 {
		t.Fatalf("single-node serve of the export exited %d", code)
	}

	// Changes through different servers: new keys, overwrites, deletes,
	// each client its own keys.
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, s := range []*served{a, b, cc} {
		var puts []string
		for j := range 40 {
			k := fmt.Sprintf("client%d/%03d", i, j)
			v := fmt.Sprintf("v%d-%d", i, r.IntN(1e6))
			want[k] = v
			puts = append(puts, k+"\t"+v)
		}
		for j := range 10 { // overwrite
			k := keys[(i*100+j*7)%len(keys)]
			want[k] = fmt.Sprintf("over-%d-%d", i, j)
			puts = append(puts, k+"\t"+want[k])
		}
		mustRun(t, strings.Join(puts, "\n")+"\n", "--db", clones[i], "import", "-")
		for j := range 5 { // delete
			k := keys[(i*100+j*7+500)%len(keys)]
			delete(want, k)
			mustRun(t, "", "--db", clones[i], "del", k)
		}
		if l := c.sync(t, clones[i], s.addr); l.Accepted != 55 || l.Server != s.addr {
			t.Fatalf("push of client %d through %s: %+v; want 55 accepted", i, s.addr, l)
		}
	}
	head := c.status(t).Head
	fresh := filepath.Join(c.dir, "fresh")
	mustRun(t, "", "--db", fresh, "import", writeFile(t, filepath.Join(c.dir, "final.tsv"), tsv(want)))
	if got := localRoot(t, fresh); got != head {
		t.Fatalf("the same records in a new single-node store: root %s; the cluster's head %s", got, head)
	}
	if l := c.sync(t, clones[0], c.addrs()); l.Root != head {
		t.Fatalf("a client's sync after the others pushed: %+v; want head %s", l, head)
	}
	if got := mustRun(t, "", "--db", clones[0], "export"); got != sortedTSV(want) {
		t.Fatal("after the pushes, a client's records differ from what the clients wrote")
	}
}

// bigDataset makes a single-node store of n records with 1000-byte values
// and imports it into the cluster; it returns the head.
func (c *cliCluster) bigDataset(t *testing.T, n int) string {
	t.Helper()
	single := filepath.Join(c.dir, "big")
	mustRun(t, "", "--db", single, "import", writeFile(t, filepath.Join(c.dir, "big.tsv"), bigValues("big/", n, 0)))
	root := localRoot(t, single)
	if out := mustRun(t, "", append([]string{"--db", single, "cluster", "import"}, c.flags...)...); !strings.Contains(out, "head "+root) {
		t.Fatalf("cluster import: %q; want head %s", out, root)
	}
	return root
}

// bigValues returns n TSV records, prefix%07d with 1000-byte values that
// depend on salt.
func bigValues(prefix string, n, salt int) string {
	var b strings.Builder
	pad := strings.Repeat("v", 980)
	for i := range n {
		fmt.Fprintf(&b, "%s%07d\t%s%020d\n", prefix, i, pad, i*7919+salt)
	}
	return b.String()
}

// killWhen kills s (SIGKILL) once its metric series passes min bytes,
// and fails the test if the client process ends first.
func killWhen(t *testing.T, s *served, series string, min float64, client *exec.Cmd, clientDone <-chan struct{}) float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-clientDone:
			t.Fatalf("the client finished before %s reached %.0f bytes: the kill would not land mid-transfer", series, min)
		default:
		}
		_, text := httpGet(t, s.metric)
		if v := metricValue(text, series); v >= min {
			if err := s.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-s.done
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed below %.0f bytes", series, min)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runSync starts 'sync --json' as a process and returns it, a channel
// closed when it exits, and its output.
func (c *cliCluster) runSync(t *testing.T, db string) (*exec.Cmd, chan struct{}, func() (clusterSync, string)) {
	t.Helper()
	// A server killed with SIGKILL closes no connection: the client notices
	// when it has been silent for --io-timeout (default 30s).
	cmd, stdout, stderr := startArborLive(t, "--db", db, "sync", "--server", c.addrs(), "--token-file", c.tokFile, "--fingerprint", c.fp, "--json", "--io-timeout", "5s")
	done := make(chan struct{})
	var out []byte
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := stdout.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
		}
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	result := func() (clusterSync, string) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(120 * time.Second):
			t.Fatalf("sync did not finish; stderr %q", stderr.String())
		}
		var l clusterSync
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("sync: exit %d, stdout %q, stderr %q", code, out, stderr.String())
		}
		if err := json.Unmarshal(out, &l); err != nil {
			t.Fatalf("sync --json: %v in %q; stderr %q", err, out, stderr.String())
		}
		return l, stderr.String()
	}
	return cmd, done, result
}

// testCLIClusterKillMidClone: a client given --server a,b,c clones a
// dataset of tens of megabytes; a is killed (SIGKILL) once it has sent a
// megabyte; the clone fails over to b, completes with the head's root and
// verifies.
func testCLIClusterKillMidClone(t *testing.T, c *cliCluster) {
	const n = 30000
	a, b, _ := c.serve3(t, "--metrics", "127.0.0.1:0")
	head := c.bigDataset(t, n)
	clone := filepath.Join(c.dir, "clone")
	cmd, done, result := c.runSync(t, clone)
	sent := killWhen(t, a, "arbor_server_sent_bytes_total", 1<<20, cmd, done)
	l, stderr := result()
	t.Logf("server a killed after sending %.1f MB; the client: %+v", sent/(1<<20), l)
	if l.Failovers < 1 || l.Server != b.addr || l.Root != head {
		t.Fatalf("clone through a killed server: %+v; want a failover to %s, root %s", l, b.addr, head)
	}
	if !strings.Contains(stderr, "failing over") {
		t.Fatalf("the failover is not on standard error: %q", stderr)
	}
	if got := localRoot(t, clone); got != head {
		t.Fatalf("the clone's root %s, the head %s", got, head)
	}
	mustVerify(t, clone, head)
	if got := mustRun(t, "", "--db", clone, "count"); got != fmt.Sprintf("%d\n", n) {
		t.Fatalf("the clone holds %s records, want %d", got, n)
	}
}

// testCLIClusterKillMidPush: a client pushes tens of megabytes of changes
// with --server a,b,c; a is killed once it has received a megabyte; the
// sync fails over and completes, and every change is in the cluster's head
// (an export of the cluster holds exactly the client's records).
func testCLIClusterKillMidPush(t *testing.T, c *cliCluster) {
	const n = 30000
	a, b, _ := c.serve3(t, "--metrics", "127.0.0.1:0")
	c.bigDataset(t, 200)
	client := filepath.Join(c.dir, "client")
	if l := c.sync(t, client, c.addrs()); l.Pulled != 200 {
		t.Fatalf("the first clone: %+v", l)
	}
	// Many local changes: new keys, and overwrites and deletes of cloned ones.
	mustRun(t, "", "--db", client, "import", writeFile(t, filepath.Join(c.dir, "changes.tsv"), bigValues("new/", n, 1)+bigValues("big/", 100, 2)))
	for i := range 5 {
		mustRun(t, "", "--db", client, "del", fmt.Sprintf("big/%07d", 150+i))
	}
	local := localRoot(t, client)
	cmd, done, result := c.runSync(t, client)
	got := killWhen(t, a, "arbor_server_received_bytes_total", 1<<20, cmd, done)
	l, stderr := result()
	t.Logf("server a killed after receiving %.1f MB; the client: %+v", got/(1<<20), l)
	if l.Failovers < 1 || l.Server != b.addr || l.Root != local {
		t.Fatalf("push through a killed server: %+v; want a failover to %s and root %s", l, b.addr, local)
	}
	if !strings.Contains(stderr, "failing over") {
		t.Fatalf("the failover is not on standard error: %q", stderr)
	}
	if head := c.status(t).Head; head != local {
		t.Fatalf("the cluster's head %s; the client's root %s", head, local)
	}
	exp := filepath.Join(c.dir, "exported")
	if ex := c.export(t, exp); ex.Root != local || ex.Records != n+200-5 {
		t.Fatalf("export after the push: %+v; want root %s, %d records", ex, local, n+200-5)
	}
	if mustRun(t, "", "--db", exp, "export") != mustRun(t, "", "--db", client, "export") {
		t.Fatal("the cluster's records differ from the client's")
	}
	mustVerify(t, client, local)
}

// testCLIClusterErrors: cluster mode without --s3 and --bucket, a
// --cert-dir holding another certificate than the cluster's, and an export
// into a directory that is not empty are refused, saying why.
func testCLIClusterErrors(t *testing.T, c *cliCluster) {
	r := runArbor(t, "", "--db", filepath.Join(c.dir, "x"), "serve", "--listen", "127.0.0.1:0", "--tokens", c.tokens, "--etcd", c.flags[1])
	if r.code == 0 || !strings.Contains(r.stderr, "cluster mode needs --etcd, --s3 and --bucket: --s3, --bucket missing") {
		t.Fatalf("serve --etcd alone: exit %d, stderr %q", r.code, r.stderr)
	}
	c.serve(t)
	// An export of a cluster with no records is an empty store.
	if ex := c.export(t, filepath.Join(c.dir, "empty-export")); ex.Records != 0 {
		t.Fatalf("export of an empty cluster: %+v", ex)
	}
	other := filepath.Join(c.dir, "other-cert")
	if err := arbornet.CreateCert(other); err != nil {
		t.Fatal(err)
	}
	certBefore, _ := os.ReadFile(filepath.Join(other, arbornet.CertFile))
	args := append([]string{"--db", filepath.Join(c.dir, "cache-x"), "serve", "--listen", "127.0.0.1:0", "--tokens", c.tokens, "--cert-dir", other}, c.flags...)
	r = runArbor(t, "", args...)
	if r.code == 0 || !strings.Contains(r.stderr, "holds another certificate than the cluster's") || strings.Contains(r.stdout, "fingerprint") {
		t.Fatalf("serve with another certificate: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if certAfter, _ := os.ReadFile(filepath.Join(other, arbornet.CertFile)); string(certAfter) != string(certBefore) {
		t.Fatal("the refused server's certificate was overwritten")
	}
	full := filepath.Join(c.dir, "full")
	writeFile(t, filepath.Join(c.dir, "keep.tsv"), "k\tv\n")
	mustRun(t, "", "--db", full, "import", filepath.Join(c.dir, "keep.tsv"))
	before := localRoot(t, full)
	r = runArbor(t, "", append([]string{"--db", full, "cluster", "export"}, c.flags...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "is not empty") {
		t.Fatalf("export into a store: exit %d, stderr %q", r.code, r.stderr)
	}
	if localRoot(t, full) != before {
		t.Fatal("a refused export changed the store in its way")
	}
}
