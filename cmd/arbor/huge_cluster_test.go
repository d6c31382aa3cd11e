//go:build hugecluster

package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHugeCluster measures, through the CLI, a cluster holding the dataset
// that bench/huge.sh leaves in ARBOR_HUGE_DIR (its server store, at the
// changed state, and its client, synced to it): 'cluster import' of the
// server store into an empty cluster (a real 3-member etcd and SeaweedFS);
// the client's d = 0 sync through one cluster server (the root audit); a
// partial replica that clones one prefix through that server and pushes D
// changes to it; and the full client's pull of those D changes through
// another server, whose cache is cold. It prints each step's time and peak
// RSS. PREFIX names the partial replica's prefix (it must hold D
// records; the default suits 10^8 records). Not part of .ci/run (at 10^8 the import alone takes many minutes):
//
//	ARBOR_HUGE_DIR=/work/huge8 ARBOR_SEAWEEDFS=$(bash .ci/seaweedfs.sh) \
//	ARBOR_SEAWEEDFS_VOLUMES=400 go test -tags hugecluster -run TestHugeCluster \
//	  -timeout 3h -v ./cmd/arbor
func TestHugeCluster(t *testing.T) {
	dir := os.Getenv("ARBOR_HUGE_DIR")
	if dir == "" {
		t.Fatal("ARBOR_HUGE_DIR must name a directory bench/huge.sh left (server/, client/)")
	}
	server, client := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	d := 1000
	if s := os.Getenv("D"); s != "" {
		d, _ = strconv.Atoi(s)
	}
	etcd, s3 := cliClusterEnv(t)
	c := newCLICluster(t, etcd, s3, "huge")

	out, el, rss := timedRun(t, append([]string{"--db", server, "cluster", "import"}, c.flags...)...)
	t.Logf("cluster import: %s, peak RSS %d MiB: %s", el, rss, strings.TrimSpace(out))
	st := mustRun(t, "", append([]string{"cluster", "status"}, c.flags...)...)
	t.Logf("cluster status:\n%s", st)
	head := c.status(t).Head

	a, b := c.serve(t), c.serve(t)
	syncArgs := func(db string, s *served, extra ...string) []string {
		return append([]string{"--db", db, "sync", "--server", s.addr, "--fingerprint", c.fp, "--token-file", c.tokFile, "--json"}, extra...)
	}
	out, el, rss = timedRun(t, syncArgs(client, a)...)
	t.Logf("full client, d = 0 sync through server a: %s, peak RSS %d MiB: %s", el, rss, strings.TrimSpace(out))
	if r := syncReport(t, out); r.Root != head {
		t.Fatalf("client root %s after sync, cluster head %s", r.Root, head)
	}

	// A partial replica of one prefix writes D changes through a.
	part := filepath.Join(c.dir, "partial")
	prefix := cmp.Or(os.Getenv("PREFIX"), "a/0000") // 2 500 records of 10^8 ('arbor example' keys)
	out, el, rss = timedRun(t, syncArgs(part, a, "--prefix", prefix)...)
	t.Logf("partial replica (prefix %s) clone through a: %s, peak RSS %d MiB: %s", prefix, el, rss, strings.TrimSpace(out))
	var input strings.Builder
	n := 0
	for _, l := range strings.Split(mustRun(t, "", "--db", part, "export"), "\n") {
		k, _, ok := strings.Cut(l, "\t")
		if !ok || n == d {
			continue
		}
		fmt.Fprintf(&input, "%s\tchanged-through-the-cluster-%d\n", k, n)
		n++
	}
	if n < d {
		t.Fatalf("prefix %s holds %d records, want %d", prefix, n, d)
	}
	mustRun(t, input.String(), "--db", part, "import", "-")
	out, el, rss = timedRun(t, syncArgs(part, a)...)
	t.Logf("partial replica pushes %d changes through a: %s, peak RSS %d MiB: %s", d, el, rss, strings.TrimSpace(out))
	syncReport(t, out)
	head = c.status(t).Head

	// The full client pulls them through b (cold cache).
	out, el, rss = timedRun(t, syncArgs(client, b)...)
	t.Logf("full client pulls %d changes through server b (cold): %s, peak RSS %d MiB: %s", d, el, rss, strings.TrimSpace(out))
	r := syncReport(t, out)
	if r.Root != head {
		t.Fatalf("full client: root %s after its pull (%s, %d pulled), cluster head %s", r.Root, r.Path, r.Pulled, head)
	}
	for _, s := range []*served{a, b} {
		t.Logf("server %s: peak RSS %d MiB", s.addr, vmHWM(t, s.cmd.Process.Pid))
	}
	out, el, rss = timedRun(t, "--db", client, "verify")
	t.Logf("verify of the full client: %s, peak RSS %d MiB: %s", el, rss, strings.TrimSpace(out))
}

type hugeSyncJSON struct {
	Path   string
	Pulled int
	Root   string
	Ms     float64
}

func syncReport(t *testing.T, out string) hugeSyncJSON {
	t.Helper()
	var r hugeSyncJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("sync --json: %v in %q", err, out)
	}
	return r
}

// timedRun runs the binary, failing the test on a non-zero exit, and
// returns its standard output, wall time and peak RSS in MiB.
func timedRun(t *testing.T, args ...string) (string, time.Duration, int64) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start).Round(time.Millisecond)
	if err != nil {
		t.Fatalf("arbor %v: %v; stderr %q", args, err, errb.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return out.String(), el, ru.Maxrss / 1024
}

// vmHWM is a running process's peak RSS in MiB.
func vmHWM(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb / 1024
		}
	}
	return -1
}
