package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIBlake3Server: 'import --hash blake3' makes a blake3 store; served,
// a replica created without --hash clones it and becomes blake3 too, both
// print the same 64-digit root, a pushed change lands, and a replica that
// already holds xxh3 data is refused with both hashes named.
func TestCLIBlake3Server(t *testing.T) {
	const tok = "tok-a-0123456789abcdef"
	dir := t.TempDir()
	srv, a, x := filepath.Join(dir, "srv"), filepath.Join(dir, "a"), filepath.Join(dir, "x")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tok+" laptop-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, records(500), "--db", srv, "--hash", "blake3", "import", "-")
	if r := runArbor(t, "", "--db", srv, "--hash", "xxh3", "root"); r.code == 0 || !strings.Contains(r.stderr, "--hash xxh3") {
		t.Fatalf("reopening a blake3 store with --hash xxh3: code %d, %q", r.code, r.stderr)
	}
	srvRoot := strings.TrimSpace(mustRun(t, "", "--db", srv, "root"))
	if len(srvRoot) != 64 {
		t.Fatalf("blake3 store root %q", srvRoot)
	}
	addr, fp := startServer(t, srv, tokens)

	mustRun(t, "", "--db", a, "sync", "--server", addr, "--token", tok, "--fingerprint", fp)
	var st struct {
		Head, Hash string
		Records    int
	}
	if err := json.Unmarshal([]byte(mustRun(t, "", "--db", a, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Hash != "blake3-256" || st.Head != srvRoot || st.Records != 500 {
		t.Fatalf("replica status %+v, server root %s", st, srvRoot)
	}
	mustRun(t, "", "--db", a, "put", "new", "value")
	mustRun(t, "", "--db", a, "sync", "--token", tok)
	if got := strings.TrimSpace(mustRun(t, "", "root", "--server", addr, "--token", tok, "--fingerprint", fp)); got != strings.TrimSpace(mustRun(t, "", "--db", a, "root")) || got == srvRoot {
		t.Fatalf("server root %s after the push; replica %s", got, mustRun(t, "", "--db", a, "root"))
	}

	mustRun(t, "", "--db", x, "put", "mine", "1")
	r := runArbor(t, "", "--db", x, "sync", "--server", addr, "--token", tok, "--fingerprint", fp, "--merge")
	if r.code == 0 || !strings.Contains(r.stderr, "blake3-256") || !strings.Contains(r.stderr, "xxh3-128") {
		t.Fatalf("an xxh3 replica with data synced with a blake3 server: code %d, %q", r.code, r.stderr)
	}
}
