package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIServeNeedsAStore: serve refuses a directory that holds no store
// (missing or empty) unless --init; it creates none when it refuses.
// --pid-file holds the server's process id while it runs and is removed
// when it exits.
func TestCLIServeNeedsAStore(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok-a-0123456789abcdef a\n"), 0o600)
	missing, empty := filepath.Join(dir, "missing"), filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	for _, db := range []string{missing, empty} {
		r := runArbor(t, "", "--db", db, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
		if r.code == 0 || !strings.Contains(r.stderr, "holds no store") || !strings.Contains(r.stderr, "--init") {
			t.Errorf("serve on %s: exit %d, stderr %q", filepath.Base(db), r.code, r.stderr)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a refused serve created %s (%v)", missing, err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("a refused serve wrote into the empty directory: %v", ents)
	}
	pidFile := filepath.Join(dir, "arbor.pid")
	s := startServe(t, "--db", missing, "serve", "--init", "--listen", "127.0.0.1:0", "--tokens", tokens, "--pid-file", pidFile)
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(s.cmd.Process.Pid) {
		t.Fatalf("pid file %q (%v), want %d", b, err, s.cmd.Process.Pid)
	}
	if code := s.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr %q", code, s.stderr.String())
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("the pid file outlived the server (%v)", err)
	}
	// The store --init made is served again without it.
	s = startServe(t, "--db", missing, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	s.stop(t, syscall.SIGTERM, 30*time.Second)
}

// TestDeploySystemdUnit: deploy/arbor.service is a well-formed unit whose
// ExecStart is a command line arbor accepts, whose stop timeout outlasts
// the drain, and which systemd-analyze verifies (when it is installed).
func TestDeploySystemdUnit(t *testing.T) {
	const path = "../../deploy/arbor.service"
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" || strings.TrimSpace(k) != k || k == "" {
				t.Fatalf("%s:%d: not KEY=VALUE in a section: %q", path, n, l)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if unit[s] == nil {
			t.Errorf("no [%s] section", s)
		}
	}
	svc := unit["Service"]
	one := func(k string) string {
		if len(svc[k]) != 1 {
			t.Fatalf("[Service] %s is set %d times, want once", k, len(svc[k]))
		}
		return svc[k][0]
	}
	args := strings.Fields(one("ExecStart"))
	if filepath.Base(args[0]) != "arbor" {
		t.Fatalf("ExecStart runs %s", args[0])
	}
	var c cli
	exit := -1
	p, err := newParser(&c, os.Stdout, os.Stderr, &exit)
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := parse(p, args[1:])
	if err != nil || exit >= 0 || kctx.Command() != "serve" {
		t.Fatalf("ExecStart's arguments: %v (exit %d)", err, exit)
	}
	if c.Serve.Init {
		t.Error("the unit serves with --init: a wrong --db would serve an empty store")
	}
	if one("KillSignal") != "SIGTERM" || !strings.Contains(one("ExecReload"), "-HUP $MAINPID") {
		t.Errorf("stop by SIGTERM and reload by SIGHUP: KillSignal=%s ExecReload=%s", svc["KillSignal"], svc["ExecReload"])
	}
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil || stop <= c.Serve.Drain {
		t.Errorf("TimeoutStopSec=%s must exceed --drain %s", one("TimeoutStopSec"), c.Serve.Drain)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: skipping 'systemd-analyze verify'")
		return
	}
	// verify needs ExecStart's binary to exist: point it at this build.
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "arbor.service")
	os.WriteFile(tmp, []byte(strings.ReplaceAll(string(text), args[0]+" ", binary+" ")), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", tmp).CombinedOutput()
	// verify exits 0 after some complaints (an unknown value is "ignored"),
	// so any line about the unit fails the test.
	if err != nil || strings.Contains(string(out), "arbor.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
