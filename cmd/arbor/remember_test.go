package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLIClientRemembersServer: after a successful sync a store remembers
// its server, pin and token file (not the token), so a plain 'arbor --db
// laptop sync' works, as do 'root --server' and 'sync --watch' without
// --fingerprint; a failed first sync or import leaves no store behind.
func TestCLIClientRemembersServer(t *testing.T) {
	const tok, tokB = "tok-a-0123456789abcdef", "tok-b-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tok+" laptop\n"+tokB+" other\n", "k1\tv1\n")
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	noEnv := []string{"ARBOR_TOKEN="}
	tokFile := filepath.Join(dir, "laptop.token")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	laptop := filepath.Join(dir, "laptop")

	// Failures into a directory that did not exist leave none behind.
	for _, args := range [][]string{
		{"--db", laptop, "sync", "--server", s.addr, "--token", "tok-wrong-0123456789abcdef", "--fingerprint", s.fp},
		{"--db", laptop, "sync", "--server", s.addr, "--token-file", tokFile, "--fingerprint", strings.Repeat("ab", 32)},
		{"--db", laptop, "sync", "--server", "127.0.0.1:1", "--token-file", tokFile, "--fingerprint", s.fp, "--timeout", "500ms"},
		{"--db", laptop, "sync", "--token-file", tokFile},
		{"--db", laptop, "import", "-"},
	} {
		if r := runArborEnv(t, noEnv, "good\t1\nno tab\n", args...); r.code == 0 {
			t.Fatalf("arbor %q succeeded", args)
		}
		if _, err := os.Stat(laptop); !os.IsNotExist(err) {
			t.Fatalf("arbor %q failed and left %s behind (%v)", args, laptop, err)
		}
	}
	// A failed import into a store that existed keeps it.
	mustRun(t, "", "--db", filepath.Join(dir, "kept"), "put", "a", "1")
	runArbor(t, "no tab\n", "--db", filepath.Join(dir, "kept"), "import", "-")
	if got := mustRun(t, "", "--db", filepath.Join(dir, "kept"), "get", "a"); got != "1\n" {
		t.Fatalf("a failed import damaged an existing store: %q", got)
	}

	r := runArborEnv(t, noEnv, "", "--db", laptop, "sync", "--server", s.addr, "--token-file", tokFile, "--fingerprint", s.fp)
	if r.code != 0 || !strings.Contains(r.stderr, "remembered server "+s.addr) {
		t.Fatalf("first sync: exit %d, stderr %q", r.code, r.stderr)
	}
	// The raw token is stored nowhere in the store's files.
	filepath.Walk(laptop, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(tok)) {
				t.Errorf("the token is stored in %s", p)
			}
		}
		return nil
	})
	mustRun(t, "", "--db", laptop, "put", "mine", "1")
	r = runArborEnv(t, noEnv, "", "--db", laptop, "sync")
	if r.code != 0 || !strings.Contains(r.stdout, "accepted 1") || strings.Contains(r.stderr, "remembered") {
		t.Fatalf("plain sync: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// root --server with --db: the store's pin and token file.
	if got, want := runArborEnv(t, noEnv, "", "--db", laptop, "root", "--server", s.addr), mustRun(t, "", "--db", laptop, "root"); got.code != 0 || got.stdout != want {
		t.Fatalf("root --server with the remembered pin: exit %d, %q (stderr %q), want %q", got.code, got.stdout, got.stderr, want)
	}
	// sync --watch with the remembered server, pin and token file follows
	// a change another client pushes.
	cmd, stdout, stderr := startArborLive(t, "--db", laptop, "sync", "--watch", "--json")
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	roots := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l struct{ Root, Error string }
			json.Unmarshal(sc.Bytes(), &l)
			roots <- l.Root + l.Error
		}
		close(roots)
	}()
	other := filepath.Join(dir, "other")
	mustRun(t, "", "--db", other, "sync", "--server", s.addr, "--token", tokB, "--fingerprint", s.fp)
	mustRun(t, "", "--db", other, "put", "from-other", "1")
	mustRun(t, "", "--db", other, "sync", "--token", tokB)
	want := strings.TrimSpace(mustRun(t, "", "--db", other, "root"))
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case r, ok := <-roots:
			if !ok {
				t.Fatalf("the watcher ended; stderr %q", stderr.String())
			}
			done = r == want
		case <-timeout:
			t.Fatalf("the watcher did not pull the change; stderr %q", stderr.String())
		}
	}
	// While the watcher holds the store, root --server with --db needs it
	// only for what the flags leave out.
	if r := runArborEnv(t, noEnv, "", "--db", laptop, "root", "--server", s.addr, "--fingerprint", s.fp, "--token-file", tokFile); r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Errorf("root --server with every flag, the store locked: exit %d, %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
