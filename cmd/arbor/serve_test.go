package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// startArborLive is startArbor with a standard error the test may read
// while the process runs.
func startArborLive(t *testing.T, args ...string) (*exec.Cmd, io.ReadCloser, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(lockedBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
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

// TestCLIServeLogs: without -v, serve logs refused handshakes and revoked
// tokens (and its own start, reload and stop), not every session;
// --log-format json makes every line a JSON object. (A client refuses a
// push outside its token's write scope before sending it, so the server's
// refusals of pushes are checked in TestServeLoggerLevels.)
func TestCLIServeLogs(t *testing.T) {
	const tokA, tokW = "tok-a-0123456789abcdef", "tok-w-0123456789abcdef"
	lines := tokA + " watcher\n" + tokW + " writer\n"
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir, srv, tokens := serverDir(t, lines, "k1\tv1\n")
			s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--log-format", format, "--metrics", "127.0.0.1:0")
			// A refused token.
			runArborEnv(t, []string{"ARBOR_TOKEN=tok-wrong-0123456789abcdef"}, "", "root", "--server", s.addr, "--fingerprint", s.fp)
			// A watching client whose token is revoked.
			watcher, _, _ := startArbor(t, "--db", filepath.Join(dir, "a"), "sync", "--watch", "--server", s.addr, "--token", tokA, "--fingerprint", s.fp)
			defer func() { watcher.Process.Kill(); watcher.Wait() }()
			waitFor(t, "the watcher's session", func() bool {
				_, text := httpGet(t, s.metric)
				return metricValue(text, "arbor_server_watchers") == 1
			})
			os.WriteFile(tokens, []byte(tokW+" writer\n"), 0o600)
			s.cmd.Process.Signal(syscall.SIGHUP)
			waitFor(t, "the revocation to be logged", func() bool { return strings.Contains(s.stderr.String(), "token revoked") })
			if code := s.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Errorf("exit %d", code)
			}
			out := s.stderr.String()
			for _, want := range []string{"handshake refused", "unauthorized", "token revoked", "reloaded tokens", "arbor serve: listening", "arbor serve: stopped"} {
				if !strings.Contains(out, want) {
					t.Errorf("the log lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "session started") {
				t.Errorf("sessions are logged without -v:\n%s", out)
			}
			for l := range strings.Lines(out) {
				if format == "json" {
					var v struct{ Level, Msg string }
					if err := json.Unmarshal([]byte(l), &v); err != nil || v.Level == "" || v.Msg == "" {
						t.Errorf("not a JSON log line: %q (%v)", l, err)
					}
				} else if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=") {
					t.Errorf("not a text log line: %q", l)
				}
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeLoggerLevels: the sync server's warnings and errors (refused
// handshakes, revoked tokens, refused pushes, failed exchanges) reach the
// log without -v; its per-session events only with -v; serve's own events
// always.
func TestServeLoggerLevels(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		var buf bytes.Buffer
		own, server := serveCmd{Verbose: verbose, LogFormat: "text"}.loggers(&buf)
		server.Error("arbor server: push refused: content collides with a stored address")
		server.Warn("arbor server: exchange failed", "err", "forbidden scope: client w may not write \"k1\"")
		server.With("x", 1).Warn("arbor server: token revoked: session ended")
		server.Info("arbor server: session started")
		own.Info("arbor serve: reloaded tokens")
		out := buf.String()
		for _, want := range []string{"level=ERROR msg=\"arbor server: push refused", "level=WARN msg=\"arbor server: exchange failed", "token revoked", "x=1", "reloaded tokens"} {
			if !strings.Contains(out, want) {
				t.Errorf("verbose %v: the log lacks %q:\n%s", verbose, want, out)
			}
		}
		if got := strings.Contains(out, "session started"); got != verbose {
			t.Errorf("verbose %v: session events logged: %v\n%s", verbose, got, out)
		}
	}
}

// bigRecords returns n TSV records with 100-byte values, enough for a
// clone to take a while.
func bigRecords(n int) string {
	var b strings.Builder
	pad := strings.Repeat("x", 90)
	for i := range n {
		fmt.Fprintf(&b, "k/%07d\t%s%010d\n", i, pad, i)
	}
	return b.String()
}

// TestCLIServeDrainOnSIGTERM: SIGTERM stops 'arbor serve' accepting
// connections (/readyz turns 503) and lets a clone in progress finish
// before the server exits 0; with a drain deadline that passes, the clone
// is cut, the server still exits 0, and the client's next sync completes
// the clone. The client is held still with SIGSTOP while its session is
// open, so that the signal lands in the middle of its sync.
func TestCLIServeDrainOnSIGTERM(t *testing.T) {
	const tok = "tok-a-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tok+" laptop-a\n", bigRecords(30000))
	serverRoot := mustRun(t, "", "--db", srv, "root")
	for _, tc := range []struct {
		name   string
		drain  string
		finish bool // the drain lets the clone finish
	}{{"finishes", "30s", true}, {"cut", "100ms", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--metrics", "127.0.0.1:0", "--drain", tc.drain)
			a := filepath.Join(dir, "a-"+tc.name)
			client, _, clientErr := startArbor(t, "--db", a, "sync", "--server", s.addr, "--token", tok, "--fingerprint", s.fp)
			clientDone := make(chan error, 1)
			go func() { clientDone <- client.Wait() }()
			waitFor(t, "the client's session", func() bool {
				_, text := httpGet(t, s.metric)
				return metricValue(text, "arbor_server_sessions") == 1
			})
			client.Process.Signal(syscall.SIGSTOP)
			s.cmd.Process.Signal(syscall.SIGTERM)
			base := strings.TrimSuffix(s.metric, "/metrics")
			waitFor(t, "/readyz to say 503", func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 503 })
			if code, _ := httpGet(t, base+"/healthz"); code != 200 {
				t.Errorf("/healthz while draining: %d", code)
			}
			if tc.finish {
				// New clients are not served while the old one still is.
				if r := runArbor(t, "", "--db", filepath.Join(t.TempDir(), "new"), "sync", "--timeout", "1s", "--server", s.addr, "--token", tok, "--fingerprint", s.fp); r.code == 0 {
					t.Errorf("a new connection was served while draining")
				}
				select {
				case <-s.done:
					t.Fatalf("the server exited with a sync in progress; stderr %q", s.stderr.String())
				default:
				}
			}
			var cerr error
			if tc.finish {
				client.Process.Signal(syscall.SIGCONT)
				cerr = <-clientDone
			} else {
				// The drain deadline passes with the client still stopped.
				<-s.done
				client.Process.Signal(syscall.SIGCONT)
				select {
				case cerr = <-clientDone:
				case <-time.After(2 * time.Second):
					// The server's close was lost (dropped from the stopped
					// client's full socket buffer): the client would wait
					// for its I/O timeout. Its next sync is what matters.
					client.Process.Kill()
					cerr = <-clientDone
				}
			}
			if code := s.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("serve exit %d; stderr %q", code, s.stderr.String())
			}
			log := s.stderr.String()
			if !strings.Contains(log, "shutting down") || !strings.Contains(log, "arbor serve: stopped") {
				t.Errorf("the log does not tell of the shutdown:\n%s", log)
			}
			if tc.finish {
				if cerr != nil {
					t.Fatalf("the clone did not finish during the drain: %v; stderr %q", cerr, clientErr.String())
				}
			} else {
				if cerr == nil {
					t.Errorf("the clone finished although the drain deadline cut it")
				}
				if !strings.Contains(log, "drain ended with syncs still running") {
					t.Errorf("the log does not say the drain cut a sync:\n%s", log)
				}
				// The next sync, to the restarted server, completes the clone.
				s2 := startServe(t, "--db", srv, "serve", "--listen", s.addr, "--tokens", tokens)
				mustRun(t, "", "--db", a, "sync", "--server", s2.addr, "--token", tok, "--fingerprint", s2.fp)
			}
			if got := mustRun(t, "", "--db", a, "root"); got != serverRoot {
				t.Fatalf("client root %s, server's %s", got, serverRoot)
			}
		})
	}
}

// TestCLIServeDrainFollowers: followers ('sync --watch') never end their
// sessions by themselves, so they do not hold up the drain: SIGTERM with
// only followers connected exits at once, not after --drain.
func TestCLIServeDrainFollowers(t *testing.T) {
	const tok = "tok-a-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tok+" laptop-a\n", "k1\tv1\n")
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--metrics", "127.0.0.1:0", "--drain", "30s")
	watcher, _, _ := startArbor(t, "--db", filepath.Join(dir, "a"), "sync", "--watch", "--server", s.addr, "--token", tok, "--fingerprint", s.fp)
	defer func() { watcher.Process.Kill(); watcher.Wait() }()
	waitFor(t, "the follower's watch", func() bool {
		_, text := httpGet(t, s.metric)
		return metricValue(text, "arbor_server_watchers") == 1
	})
	start := time.Now()
	if code := s.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("serve exit %d; stderr %q", code, s.stderr.String())
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the drain waited %s for a follower", el)
	}
}

// TestCLIChangeServedData: a served store is locked, and the error says
// how to change its records instead; that way (a replica synced with a
// token that may write every key) works, as the README shows.
func TestCLIChangeServedData(t *testing.T) {
	const admin, reader = "tok-admin-0123456789abcdef", "tok-r-0123456789abcdef"
	dir, srv, tokens := serverDir(t, admin+" admin\n"+reader+" reader write=none/\n", "k1\tv1\n")
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	r := runArbor(t, "", "--db", srv, "put", "k2", "v2")
	if r.code == 0 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("put into a served store: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"store is locked", "If 'arbor serve' runs on it", "arbor --db admin sync --server ADDR --token-file admin.token", "arbor --db admin put KEY VALUE", `"Changing the data while serving"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the locked error lacks %q: %q", want, r.stderr)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil || !strings.Contains(string(readme), "Changing the data while serving") {
		t.Errorf("README has no passage 'Changing the data while serving' (%v)", err)
	}
	tokFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokFile, []byte(admin+"\n"), 0o600)
	a := filepath.Join(dir, "admin")
	mustRun(t, "", "--db", a, "sync", "--server", s.addr, "--token-file", tokFile, "--fingerprint", s.fp)
	mustRun(t, "", "--db", a, "put", "k2", "v2")
	mustRun(t, "", "--db", a, "del", "k1")
	if out := mustRun(t, "", "--db", a, "sync", "--server", s.addr, "--token-file", tokFile); !strings.Contains(out, "accepted 2") {
		t.Fatalf("the admin's push: %q", out)
	}
	// Every client sees it: the server's root is the admin's.
	got := mustRun(t, "", "root", "--server", s.addr, "--token", reader, "--fingerprint", s.fp)
	if want := mustRun(t, "", "--db", a, "root"); got != want {
		t.Fatalf("server root %s, admin's %s", got, want)
	}
	s.stop(t, syscall.SIGTERM, 30*time.Second)
	if out := mustRun(t, "", "--db", srv, "export"); out != "k2\tv2\n" {
		t.Fatalf("the served store holds %q", out)
	}
}
