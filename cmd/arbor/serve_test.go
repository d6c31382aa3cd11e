package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// served is an 'arbor serve' process started by startServe.
type served struct {
	cmd              *exec.Cmd
	addr, fp, metric string // metric: the /metrics URL, if --metrics was given
	stdout, stderr   *lockedBuffer
	done             chan struct{}
	err              error // cmd.Wait's, once done is closed
}

// startServe runs 'arbor ARGS' (a serve command line) and waits until it
// prints its fingerprint. The process is interrupted at cleanup if it is
// still running.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	s := &served{cmd: exec.Command(binary, args...), stdout: new(lockedBuffer), stderr: new(lockedBuffer), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true", "ARBOR_TOKEN=")
	pipe, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pipe)
		signalled := false
		for sc.Scan() {
			l := sc.Text()
			s.stdout.Write([]byte(l + "\n"))
			if a, ok := strings.CutPrefix(l, "listening on "); ok {
				s.addr = a
			}
			if m, ok := strings.CutPrefix(l, "metrics "); ok {
				s.metric = m
			}
			if f, ok := strings.CutPrefix(l, "fingerprint: "); ok && !signalled {
				s.fp = f
				signalled = true
				close(ready)
			}
		}
		if !signalled {
			close(ready)
		}
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("arbor %q did not start; stderr %q", args, s.stderr.String())
	}
	if s.fp == "" {
		<-s.done
		t.Fatalf("arbor %q exited before listening: %v; stderr %q", args, s.err, s.stderr.String())
	}
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Signal(os.Interrupt)
			<-s.done
		}
	})
	return s
}

// stop sends sig and returns the exit code, failing the test if the
// process does not end within limit.
func (s *served) stop(t *testing.T, sig os.Signal, limit time.Duration) int {
	t.Helper()
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(limit):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("serve did not exit within %s of %v; stderr %q", limit, sig, s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metricValue returns one series' value in Prometheus text ("NAME{LABELS}
// VALUE" lines), or -1 if it is absent.
func metricValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// records returns n TSV records, k/0000000 v0 … (about 20 bytes each).
func records(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "k/%07d\tv%d\n", i, i)
	}
	return b.String()
}

// serverDir makes a server store with records and a tokens file; it
// returns the folder, the store and the tokens file.
func serverDir(t *testing.T, tokenLines, records string) (dir, srv, tokens string) {
	t.Helper()
	dir = t.TempDir()
	srv, tokens = filepath.Join(dir, "srv"), filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tokenLines), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, records, "--db", srv, "import", "-")
	return dir, srv, tokens
}

// TestCLIServeMetrics: 'serve --metrics' exposes the server's counters in
// Prometheus text; a clone, a push and a refused token show in them, and
// /healthz and /readyz answer on the same listener without a token.
func TestCLIServeMetrics(t *testing.T) {
	const tok = "tok-a-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tok+" laptop-a\n", records(2000))
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--metrics", "127.0.0.1:0")
	if !strings.HasPrefix(s.metric, "http://127.0.0.1:") || !strings.HasSuffix(s.metric, "/metrics") {
		t.Fatalf("serve printed metrics URL %q", s.metric)
	}
	a := filepath.Join(dir, "a")
	env := []string{"ARBOR_TOKEN=" + tok}
	if r := runArborEnv(t, env, "", "--db", a, "sync", "--server", s.addr, "--fingerprint", s.fp); r.code != 0 {
		t.Fatalf("clone: %q", r.stderr)
	}
	mustRun(t, "", "--db", a, "put", "k4", "v4")
	if r := runArborEnv(t, env, "", "--db", a, "sync", "--server", s.addr); r.code != 0 {
		t.Fatalf("push: %q", r.stderr)
	}
	if r := runArborEnv(t, []string{"ARBOR_TOKEN=tok-wrong-0123456789abcdef"}, "", "root", "--server", s.addr, "--fingerprint", s.fp); r.code == 0 {
		t.Fatal("a wrong token was accepted")
	}
	var text string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, text = httpGet(t, s.metric)
		if metricValue(text, "arbor_server_sessions") == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := map[string]float64{
		`arbor_server_sessions`:                             0,
		`arbor_server_sessions_started_total`:               2,
		`arbor_server_refused_total{reason="unauthorized"}`: 1,
		`arbor_server_pushes_total`:                         1,
		`arbor_server_changes_total{outcome="accepted"}`:    1,
		`arbor_server_changes_total{outcome="overridden"}`:  0,
		`arbor_server_commit_duration_seconds_count`:        1,
		`arbor_server_pushes_refused_total`:                 0,
		`arbor_server_watchers`:                             0,
	}
	for series, v := range want {
		if got := metricValue(text, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	for _, series := range []string{`arbor_server_received_bytes_total`, `arbor_server_sent_bytes_total`, `arbor_server_retained_roots`, `arbor_store_disk_bytes`} {
		if got := metricValue(text, series); got <= 0 {
			t.Errorf("%s = %v, want > 0", series, got)
		}
	}
	if metricValue(text, `arbor_server_syncs_total{path="tree"}`)+metricValue(text, `arbor_server_syncs_total{path="walk"}`) < 1 {
		t.Errorf("the clone counted no tree or walk request:\n%s", regexp.MustCompile(`(?m)^arbor_server_syncs.*$`).FindAllString(text, -1))
	}
	base := strings.TrimSuffix(s.metric, "/metrics")
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code := s.stop(t, syscall.SIGINT, 30*time.Second); code != 0 {
		t.Errorf("serve exit %d after SIGINT; stderr %q", code, s.stderr.String())
	}
}
