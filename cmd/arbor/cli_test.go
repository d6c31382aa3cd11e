package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binary is the arbor command built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "arbor")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runArbor runs the built binary with args and stdin, as a user would.
func runArbor(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := runArbor(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("arbor %v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout
}

func TestCLIImportGetExportRoundTrip(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	input := "user/2\tgrace\nuser/1\tada\nother\tx\n"
	if out := mustRun(t, input, "--db", db, "import", "-"); !strings.Contains(out, "imported 3 records") {
		t.Fatalf("import output %q", out)
	}
	if got := mustRun(t, "", "get", "user/1", "--db", db); got != "ada\n" {
		t.Fatalf("get = %q", got)
	}
	if got := mustRun(t, "", "--db", db, "export"); got != "other\tx\nuser/1\tada\nuser/2\tgrace\n" {
		t.Fatalf("export = %q", got)
	}
	if got := mustRun(t, "", "--db", db, "scan", "--prefix", "user/", "--limit", "1"); got != "user/1\tada\n" {
		t.Fatalf("scan = %q", got)
	}
	// The value '-' reads standard input, bytes exact with --raw.
	mustRun(t, "line1\nline2", "--db", db, "put", "blob", "-")
	if got := mustRun(t, "", "--db", db, "get", "--raw", "blob"); got != "line1\nline2" {
		t.Fatalf("get --raw = %q", got)
	}
	mustRun(t, "", "--db", db, "del", "blob")
	if r := runArbor(t, "", "--db", db, "get", "blob"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("get deleted key: exit %d stderr %q", r.code, r.stderr)
	}
	if got := mustRun(t, "", "--db", db, "count"); got != "3\n" {
		t.Fatalf("count = %q", got)
	}
	root := strings.TrimSpace(mustRun(t, "", "--db", db, "root"))
	if len(root) != 32 {
		t.Fatalf("root %q is not 32 hex digits", root)
	}
	if out := mustRun(t, "", "--db", db, "verify"); !strings.Contains(out, "ok: root "+root) {
		t.Fatalf("verify output %q", out)
	}
	// ARBOR_DB works in place of --db.
	cmd := exec.Command(binary, "root")
	cmd.Env = append(os.Environ(), "ARBOR_DB="+db)
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != root {
		t.Fatalf("ARBOR_DB root = %q, %v", out, err)
	}
}

func TestCLIBadInputIsRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	mustRun(t, "a\t1\n", "--db", db, "import", "-")
	before := mustRun(t, "", "--db", db, "root")
	r := runArbor(t, "b\t2\nno tab here\n", "--db", db, "import", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "line 2") {
		t.Fatalf("bad import: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := mustRun(t, "", "--db", db, "root"); after != before {
		t.Fatal("a failed import changed the store")
	}
	r = runArbor(t, "{\"key\": 1}\n", "--db", db, "import", "--format", "jsonl", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "line 1") {
		t.Fatalf("bad jsonl import: exit %d, stderr %q", r.code, r.stderr)
	}
	// A directory that is not a store.
	notStore := t.TempDir()
	os.WriteFile(filepath.Join(notStore, "file.txt"), []byte("hi"), 0o644)
	if r := runArbor(t, "", "--db", notStore, "root"); r.code == 0 || !strings.Contains(r.stderr, "not an arbor store") {
		t.Fatalf("root on a non-store: exit %d, stderr %q", r.code, r.stderr)
	}
	// No store given at all.
	if r := runArbor(t, "", "root"); r.code == 0 || !strings.Contains(r.stderr, "--db") {
		t.Fatalf("root without --db: exit %d, stderr %q", r.code, r.stderr)
	}
	// Unknown command: usage error.
	if r := runArbor(t, "", "frobnicate"); r.code == 0 {
		t.Fatalf("unknown command exits 0")
	}
}

func TestCLIHelpHasExamples(t *testing.T) {
	for _, c := range []string{"put", "get", "import", "export", "scan", "root", "verify", "gc"} {
		out := mustRun(t, "", c, "--help")
		if !strings.Contains(out, "Example") {
			t.Errorf("arbor %s --help has no example:\n%s", c, out)
		}
	}
}

func TestCLIDiffTwoStoresAndStatus(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	mustRun(t, "k1\tone\nk2\ttwo\nk3\tthree\n", "--db", a, "import", "-")
	mustRun(t, "k1\tone\nk2\tTWO\nk4\tfour\n", "--db", b, "import", "-")
	got := mustRun(t, "", "--db", a, "diff", "--against", b)
	want := "~ k2 two -> TWO\n- k3 three\n+ k4 four\n"
	if got != want {
		t.Fatalf("diff = %q, want %q", got, want)
	}
	js := mustRun(t, "", "--db", a, "diff", "--against", b, "--json", "--prefix", "k4")
	if js != `{"op":"added","key":"k4","new":"four"}`+"\n" {
		t.Fatalf("diff --json --prefix k4 = %q", js)
	}
	// Two roots in one store: before and after a put.
	r1 := strings.TrimSpace(mustRun(t, "", "--db", a, "root"))
	mustRun(t, "", "--db", a, "put", "k5", "five")
	r2 := strings.TrimSpace(mustRun(t, "", "--db", a, "root"))
	if got := mustRun(t, "", "--db", a, "diff", r1, r2); got != "+ k5 five\n" {
		t.Fatalf("diff of two roots = %q", got)
	}
	// Identical stores: no changes.
	if got := mustRun(t, "", "--db", a, "diff", r2, r2); got != "" {
		t.Fatalf("diff of equal roots = %q", got)
	}
	st := mustRun(t, "", "--db", a, "status")
	if !strings.Contains(st, "never synced") || !strings.Contains(st, "local changes 4") {
		t.Fatalf("status = %q", st)
	}
}
