package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	for _, c := range []string{"put", "get", "del", "import", "export", "scan", "count", "root", "verify", "diff", "status", "gc", "serve", "sync", "demo", "version"} {
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

// startServer runs 'arbor serve' on a free port and returns its address and
// fingerprint; the server is stopped with SIGINT at cleanup.
// startArbor starts the binary in the background: its stdout as a pipe,
// its stderr collected.
func startArbor(t *testing.T, args ...string) (*exec.Cmd, io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

func startServer(t *testing.T, db, tokens string) (addr, fp string) {
	t.Helper()
	cmd, stdout, stderr := startArbor(t, "--db", db, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	done := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		if err := <-done; err != nil {
			t.Errorf("server exit: %v (stderr %q)", err, stderr.String())
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	for l := range lines {
		if a, ok := strings.CutPrefix(l, "listening on "); ok {
			addr = a
		}
		if f, ok := strings.CutPrefix(l, "fingerprint: "); ok {
			fp = f
			break
		}
	}
	if addr == "" || fp == "" {
		t.Fatalf("server did not print its address and fingerprint; stderr %q", stderr.String())
	}
	go func() {
		for range lines {
		}
	}()
	return addr, fp
}

// serveTwoClients imports records (TSV) into a server store, serves it
// with the tokens file's lines, and returns the store paths of the server
// and of two clients (not yet created), the address and the fingerprint.
func serveTwoClients(t *testing.T, tokenLines, records string) (srv, a, b, addr, fp string) {
	t.Helper()
	dir := t.TempDir()
	srv, a, b = filepath.Join(dir, "srv"), filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tokenLines), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, records, "--db", srv, "import", "-")
	addr, fp = startServer(t, srv, tokens)
	return srv, a, b, addr, fp
}

func TestCLIServeAndSyncTwoClientsWithConflict(t *testing.T) {
	srv, a, b, addr, fp := serveTwoClients(t, "# clients\ntok-a-0123456789abcdef laptop-a\ntok-b-0123456789abcdef laptop-b\n", "k1\tv1\nk2\tv2\nk3\tv3\n")
	syncArgs := func(db, tok string) []string {
		return []string{"--db", db, "sync", "--server", addr, "--token", tok, "--fingerprint", fp}
	}
	mustRun(t, "", syncArgs(a, "tok-a-0123456789abcdef")...)
	mustRun(t, "", syncArgs(b, "tok-b-0123456789abcdef")...)
	if got := mustRun(t, "", "--db", a, "get", "k2"); got != "v2\n" {
		t.Fatalf("clone: k2 = %q", got)
	}
	// Both change k2; a syncs first and wins, b is told it was overridden.
	mustRun(t, "", "--db", a, "put", "k2", "from-a")
	mustRun(t, "", "--db", b, "put", "k2", "from-b")
	mustRun(t, "", "--db", b, "put", "k4", "only-b")
	mustRun(t, "", syncArgs(a, "tok-a-0123456789abcdef")...)
	out := mustRun(t, "", append(syncArgs(b, "tok-b-0123456789abcdef"), "--json")...)
	var res struct {
		Overridden []struct{ Key, Local, Server string }
		Accepted   int
		Root       string
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("sync --json output %q: %v", out, err)
	}
	if len(res.Overridden) != 1 || res.Overridden[0].Key != "k2" || res.Overridden[0].Local != "from-b" || res.Overridden[0].Server != "from-a" || res.Accepted != 1 {
		t.Fatalf("b's sync result %+v, want k2 overridden (from-b lost to from-a) and k4 accepted", res)
	}
	mustRun(t, "", syncArgs(a, "tok-a-0123456789abcdef")...)
	ra := mustRun(t, "", "--db", a, "root")
	rb := mustRun(t, "", "--db", b, "root")
	if ra != rb || strings.TrimSpace(ra) != res.Root {
		t.Fatalf("roots differ after sync: a %s b %s result %s", ra, rb, res.Root)
	}
	if got := mustRun(t, "", "--db", b, "get", "k2"); got != "from-a\n" {
		t.Fatalf("b's k2 = %q, want the server's from-a", got)
	}
	if got := mustRun(t, "", "--db", a, "get", "k4"); got != "only-b\n" {
		t.Fatalf("a's k4 = %q, want only-b", got)
	}
	// The audit: the server's root equals the clients'.
	if got := mustRun(t, "", "root", "--server", addr, "--token", "tok-a-0123456789abcdef", "--fingerprint", fp); got != ra {
		t.Fatalf("root --server = %q, want %q", got, ra)
	}
	// A wrong token and a wrong fingerprint are refused with clear errors.
	if r := runArbor(t, "", syncArgs(a, "tok-wrong-0123456789abcdef")...); r.code == 0 || !strings.Contains(r.stderr, "unauthorized") {
		t.Fatalf("wrong token: exit %d, stderr %q", r.code, r.stderr)
	}
	bad := strings.Repeat("ab", 32)
	if r := runArbor(t, "", "--db", filepath.Join(filepath.Dir(a), "c"), "sync", "--server", addr, "--token", "tok-a-0123456789abcdef", "--fingerprint", bad); r.code == 0 || !strings.Contains(r.stderr, "not trusted") {
		t.Fatalf("wrong fingerprint: exit %d, stderr %q", r.code, r.stderr)
	}
	// The server holds its store: a second opener is refused clearly.
	if r := runArbor(t, "", "--db", srv, "root"); r.code == 0 || !strings.Contains(r.stderr, "locked") {
		t.Fatalf("second opener: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCLIDemo(t *testing.T) {
	out := mustRun(t, "", "demo", "--records", "5000", "--edits", "50")
	if !strings.Contains(out, "0 checks failed") || strings.Contains(out, "FAIL") {
		t.Fatalf("demo output:\n%s", out)
	}
}

// TestCLIPartialSync: 'arbor sync --prefix' makes a partial replica that
// verifies; a token's write scope refuses a push outside it.
func TestCLIPartialSync(t *testing.T) {
	dir := t.TempDir()
	srv, a := filepath.Join(dir, "srv"), filepath.Join(dir, "a")
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok-a-0123456789abcdef laptop-a read=u/,shared/ write=u/\n"), 0o600)
	var in strings.Builder
	for i := range 200 {
		fmt.Fprintf(&in, "%c/%03d\tv%d\n", "su"[i%2], i, i)
	}
	mustRun(t, in.String(), "--db", srv, "import", "-")
	addr, fp := startServer(t, srv, tokens)
	out := mustRun(t, "", "--db", a, "sync", "--server", addr, "--token", "tok-a-0123456789abcdef", "--fingerprint", fp, "--prefix", "u/", "--prefix", "x/")
	if !strings.Contains(out, `scope: ["u/", "u0")`) || !strings.Contains(out, "pulled 100") {
		t.Fatalf("partial sync output %q", out)
	}
	if out := mustRun(t, "", "--db", a, "verify"); !strings.Contains(out, `ok: partial replica of ["u/", "u0")`) {
		t.Fatalf("verify output %q", out)
	}
	if r := runArbor(t, "", "--db", a, "put", "s/000", "x"); r.code == 0 || !strings.Contains(r.stderr, "outside scope") {
		t.Fatalf("put outside scope: code %d stderr %q", r.code, r.stderr)
	} else if !strings.HasPrefix(r.stderr, "arbor: ") || strings.Contains(r.stderr, "arbor: arbor:") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("put outside scope: want one line with one 'arbor: ' prefix, got %q", r.stderr)
	}
	// status counts what count counts: the records in scope, not the
	// server's whole tree.
	if n := mustRun(t, "", "--db", a, "count"); n != "100\n" {
		t.Errorf("count on the partial replica = %q, want 100", n)
	}
	if st := mustRun(t, "", "--db", a, "status"); !strings.Contains(st, "records 100\n") || !strings.Contains(st, `scope ["u/", "u0")`) {
		t.Errorf("status on the partial replica:\n%s", st)
	}
	var st struct {
		Records uint64 `json:"records"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "", "--db", a, "status", "--json")), &st); err != nil || st.Records != 100 {
		t.Errorf("status --json on the partial replica: records %d (%v), want 100", st.Records, err)
	}
	if n := mustRun(t, "", "--db", a, "count", "--prefix", "u/0"); n != "50\n" {
		t.Errorf("count --prefix u/0 on the partial replica = %q, want 50", n)
	}
	if n := mustRun(t, "", "--db", a, "count", "--start", "r", "--end", "u/010"); n != "5\n" {
		t.Errorf("count --start r --end u/010 on the partial replica = %q, want 5 (u/001 … u/009, odd)", n)
	}
	mustRun(t, "", "--db", a, "put", "u/new", "mine")
	out = mustRun(t, "", "--db", a, "sync", "--server", addr, "--token", "tok-a-0123456789abcdef", "--fingerprint", fp)
	if !strings.Contains(out, "accepted 1") {
		t.Fatalf("push in scope: %q", out)
	}
}

// TestCLISyncWatch: 'arbor sync --watch --json' mirrors the server live. A
// change another client pushes reaches the watching store with no command
// run on it, each sync prints one JSON line, and an interrupt ends it with
// exit 0.
func TestCLISyncWatch(t *testing.T) {
	_, a, b, addr, fp := serveTwoClients(t, "tok-a-0123456789abcdef mirror\ntok-b-0123456789abcdef writer\n", "k1\tv1\n")

	cmd, stdout, stderr := startArbor(t, "--db", a, "sync", "--watch", "--json", "--server", addr, "--token", "tok-a-0123456789abcdef", "--fingerprint", fp)
	type syncLine struct {
		Pulled int
		Root   string
		Error  string
	}
	lines := make(chan syncLine, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l syncLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l.Error = fmt.Sprintf("bad line %q: %v", sc.Text(), err)
			}
			lines <- l
		}
		close(lines)
	}()
	next := func(what string) syncLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s: watcher ended early; stderr %q", what, stderr.String())
			}
			if l.Error != "" {
				t.Fatalf("%s: %s", what, l.Error)
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no sync line; stderr %q", what, stderr.String())
		}
		panic("unreachable")
	}
	if l := next("the clone"); l.Pulled != 1 {
		t.Fatalf("clone pulled %d records, want 1", l.Pulled)
	}
	// Another client pushes two records; the watcher pulls them by itself.
	syncB := []string{"--db", b, "sync", "--server", addr, "--token", "tok-b-0123456789abcdef", "--fingerprint", fp}
	mustRun(t, "", syncB...)
	mustRun(t, "", "--db", b, "put", "k2", "v2")
	mustRun(t, "", "--db", b, "put", "k3", "v3")
	mustRun(t, "", syncB...)
	want := strings.TrimSpace(mustRun(t, "", "--db", b, "root"))
	pulled := 0
	for l := next("the live pull"); ; l = next("the live pull") {
		pulled += l.Pulled
		if l.Root == want {
			break
		}
	}
	if pulled != 2 {
		t.Fatalf("watcher pulled %d records, want 2", pulled)
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watcher exit after interrupt: %v (stderr %q)", err, stderr.String())
	}
	if got := mustRun(t, "", "--db", a, "get", "k3"); got != "v3\n" {
		t.Fatalf("mirror k3 = %q, want v3", got)
	}
}
