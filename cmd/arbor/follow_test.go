package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
)

// TestCLISyncWatchReconnects: 'sync --watch' reports a refused token and
// keeps retrying it until the server's tokens file accepts it; says when
// the connection is lost (the server stops) and when it is back (the
// server restarts on the same address); then pulls a change by itself;
// and on interrupt counts only the syncs that succeeded.
func TestCLISyncWatchReconnects(t *testing.T) {
	const tokM, tokW = "tok-m-0123456789abcdef", "tok-w-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tokW+" writer\n", "k1\tv1\n")
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	mirror := filepath.Join(dir, "mirror")

	cmd, stdout, stderr := startArborLive(t, "--db", mirror, "sync", "--watch", "--server", s.addr, "--token", tokM, "--fingerprint", s.fp)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var mu sync.Mutex
	var outLines []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			outLines = append(outLines, sc.Text())
			mu.Unlock()
		}
	}()
	synced := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, l := range outLines {
			if strings.HasPrefix(l, "synced as ") {
				n++
			}
		}
		return n
	}
	stderrHas := func(what, sub string) {
		t.Helper()
		waitFor(t, what, func() bool { return strings.Contains(stderr.String(), sub) })
	}

	// The token is unknown: reported, and retried rather than fatal.
	stderrHas("the refusal", s.addr+" refused the token")
	waitFor(t, "a second refusal", func() bool { return strings.Count(stderr.String(), "refused the token") >= 2 })
	os.WriteFile(tokens, []byte(tokW+" writer\n"+tokM+" mirror\n"), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	stderrHas("the token accepted", s.addr+" accepts the token now")
	waitFor(t, "the clone", func() bool { return synced() == 1 })

	// The server stops: the idle follower says the connection is lost.
	if code := s.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	stderrHas("the loss", "connection to "+s.addr+" lost")
	time.Sleep(300 * time.Millisecond)
	s2 := startServe(t, "--db", srv, "serve", "--listen", s.addr, "--tokens", tokens)
	stderrHas("the return", "connection to "+s.addr+" is back")

	// A change another client pushes arrives by itself.
	w := filepath.Join(dir, "w")
	mustRun(t, "", "--db", w, "sync", "--server", s2.addr, "--token", tokW, "--fingerprint", s2.fp)
	mustRun(t, "", "--db", w, "put", "k2", "v2")
	mustRun(t, "", "--db", w, "sync", "--token", tokW)
	waitFor(t, "the live pull", func() bool { return synced() == 2 })

	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watcher exit: %v; stderr %q", err, stderr.String())
	}
	m := regexp.MustCompile(`stopped after (\d+) syncs \((\d+) more failed\)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no 'stopped after N syncs (M more failed)' line: %q", stderr.String())
	}
	if n, _ := strconv.Atoi(m[1]); n != synced() {
		t.Errorf("stopped after %d syncs, printed %d", n, synced())
	}
	if f, _ := strconv.Atoi(m[2]); f < 1 {
		t.Errorf("%d failed syncs counted, want the refused one(s)", f)
	}
	t.Logf("the follower's messages:\n%s", stderr.String())
	if got := mustRun(t, "", "--db", mirror, "get", "k2"); got != "v2\n" {
		t.Fatalf("mirror k2 = %q", got)
	}
}

// TestFollowErrorClasses: which errors the follower retries and how it
// reports them.
func TestFollowErrorClasses(t *testing.T) {
	for _, c := range []struct {
		err  error
		want errClass
	}{
		{fmt.Errorf("sync with x: %w: unknown token", arbor.ErrUnauthorized), errRefused},
		{fmt.Errorf("x: %w", arbor.ErrForbiddenScope), errRefused},
		{fmt.Errorf("x: %w", arbor.ErrFingerprint), errFatal},
		{fmt.Errorf("x: %w", arbor.ErrNoSyncHistory), errFatal},
		{fmt.Errorf("x: %w", arbor.ErrVersion), errFatal},
		{fmt.Errorf("connect: %w", os.ErrDeadlineExceeded), errLink},
		{fmt.Errorf("connect: %w", syscall.ECONNREFUSED), errLink},
		{errors.New("store full"), errOther},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
