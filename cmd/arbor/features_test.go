package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/tree"
)

// runArborEnv is runArbor with extra environment variables.
func runArborEnv(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
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

// TestCLITokenFromFileAndEnvironment: sync and root --server take the
// token from --token-file or ARBOR_TOKEN, so it need not be on the command
// line where 'ps' shows it.
func TestCLITokenFromFileAndEnvironment(t *testing.T) {
	const tokA, tokB = "tok-a-0123456789abcdef", "tok-b-0123456789abcdef"
	_, a, b, addr, fp := serveTwoClients(t, tokA+" laptop-a\n"+tokB+" laptop-b\n", "k1\tv1\n")
	dir := filepath.Dir(a)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("  "+tokA+"  \nsecond line ignored\n"), 0o600)
	noEnv := []string{"ARBOR_TOKEN="}

	// --token-file: the first line, trimmed.
	if r := runArborEnv(t, noEnv, "", "--db", a, "sync", "--server", addr, "--token-file", tokenFile, "--fingerprint", fp, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"client":"laptop-a"`) {
		t.Fatalf("sync --token-file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// ARBOR_TOKEN.
	if r := runArborEnv(t, []string{"ARBOR_TOKEN=" + tokB}, "", "--db", b, "sync", "--server", addr, "--fingerprint", fp, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"client":"laptop-b"`) {
		t.Fatalf("sync with ARBOR_TOKEN: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	root := mustRun(t, "", "--db", a, "root")
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{[]string{"ARBOR_TOKEN=" + tokA}, nil},
		{noEnv, []string{"--token-file", tokenFile}},
		{[]string{"ARBOR_TOKEN=not-the-token-0123456789"}, []string{"--token-file", tokenFile}}, // the flag wins
	} {
		args := append([]string{"root", "--server", addr, "--fingerprint", fp}, c.args...)
		if r := runArborEnv(t, c.env, "", args...); r.code != 0 || r.stdout != root {
			t.Fatalf("root --server %v with %v: exit %d, stdout %q (want %q), stderr %q", c.args, c.env, r.code, r.stdout, root, r.stderr)
		}
	}
	// No token anywhere, two tokens, an empty or missing file: clear refusals.
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "ARBOR_TOKEN"},
		{[]string{"--token", tokA, "--token-file", tokenFile}, "not both"},
		{[]string{"--token-file", empty}, "first line is empty"},
		{[]string{"--token-file", filepath.Join(dir, "missing")}, "no such file"},
	} {
		// (A fresh store: a remembers its token file since its sync above.)
		for _, cmd := range [][]string{{"--db", filepath.Join(dir, "fresh"), "sync", "--server", addr}, {"root", "--server", addr}} {
			r := runArborEnv(t, noEnv, "", append(cmd, c.args...)...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("%v %v: exit %d, stderr %q; want a refusal mentioning %q", cmd, c.args, r.code, r.stderr, c.want)
			}
		}
	}
}

// TestCLIJSONOutputs: every --json output is JSON lines with snake_case
// names, and the commands that print data have --json.
func TestCLIJSONOutputs(t *testing.T) {
	dir := t.TempDir()
	db, other := filepath.Join(dir, "db"), filepath.Join(dir, "other")
	mustInProcess(t, []byte("a/1\tx\nb/1\ty\n"), "--db", other, "import", "-")
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var checkNames func(path string, v any)
	checkNames = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if !snake.MatchString(k) {
					t.Errorf("%s: field %q is not snake_case", path, k)
				}
				checkNames(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				checkNames(path, x)
			}
		}
	}
	for _, c := range []struct {
		args  []string
		stdin string
		want  []string // fields the first object must have
	}{
		{[]string{"import", "--json", "-"}, "a/1\tone\na/2\ttwo\nb/1\t\xff\n", []string{"records", "root", "ms", "records_per_second"}},
		{[]string{"root", "--json"}, "", []string{"root"}},
		{[]string{"count", "--json"}, "", []string{"count"}},
		{[]string{"get", "--json", "a/1"}, "", []string{"key", "value"}},
		{[]string{"get", "--json", "b/1"}, "", []string{"key", "value_b64"}},
		{[]string{"export", "--json"}, "", []string{"key", "value"}},
		{[]string{"scan", "--json", "--limit", "1"}, "", []string{"key", "value"}},
		{[]string{"status", "--json"}, "", []string{"head", "base", "synced", "records", "local_changes", "scope"}},
		{[]string{"verify", "--json"}, "", []string{"root", "nodes", "records", "ok", "problems"}},
		{[]string{"diff", "--json", "--against", other}, "", []string{"op", "key"}},
		{[]string{"gc", "--json"}, "", []string{"live_nodes", "deleted_nodes", "disk_bytes_after"}},
		{[]string{"version", "--json"}, "", []string{"version", "go"}},
		{[]string{"example", "--json", "--records", "3"}, "", []string{"key", "value"}},
		{[]string{"demo", "--json", "--records", "500", "--edits", "20"}, "", []string{"type", "records", "root"}},
	} {
		out := mustInProcess(t, []byte(c.stdin), append([]string{"--db", db}, c.args...)...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for i, l := range lines {
			var v map[string]any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%v: line %d %q is not a JSON object: %v", c.args, i+1, l, err)
			}
			checkNames(strings.Join(c.args, " "), v)
			if i == 0 {
				for _, f := range c.want {
					if _, ok := v[f]; !ok {
						t.Errorf("%v: %q has no field %q", c.args, l, f)
					}
				}
			}
		}
	}
	if n := mustInProcess(t, nil, "--db", db, "count", "--json"); n != `{"count":3}`+"\n" {
		t.Errorf("count --json = %q", n)
	}
}

// TestCLIReadmeFlagsParse: every arbor command line in the README parses,
// and the flags the README lists for export, scan and count work.
func TestCLIReadmeFlagsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	inSh := false
	// Variables a block sets to a plain value (C="--etcd … --bucket arbor")
	// are expanded in the commands after it.
	vars := map[string]string{}
	assign := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"$]*)"|([^\s"$]+))$`)
	for line := range strings.Lines(string(readme)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "```sh":
			inSh = true
			continue
		case strings.HasPrefix(line, "```"):
			inSh = false
			continue
		}
		if !inSh {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if m := assign.FindStringSubmatch(line); m != nil {
			vars[m[1]] = m[2] + m[3]
			continue
		}
		for name, v := range vars {
			line = strings.ReplaceAll(line, "$"+name, v)
		}
		for _, part := range regexp.MustCompile(`&&|\||;|\$\(|\)`).Split(line, -1) {
			f := strings.Fields(part)
			for i, w := range f {
				if strings.HasPrefix(w, ">") || strings.HasPrefix(w, "<") {
					f = f[:i]
					break
				}
			}
			for len(f) > 0 && (strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") || f[0] == "do" || f[0] == "then") {
				f = f[1:] // VAR=value before the command, or a loop's or if's body
			}
			if len(f) == 0 || f[0] != "arbor" {
				continue
			}
			var c cli
			exit := -1
			p, err := newParser(&c, new(bytes.Buffer), new(bytes.Buffer), &exit)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parse(p, f[1:]); err != nil || exit > 0 {
				t.Errorf("README line %q: %v (exit %d)", strings.Join(f, " "), err, exit)
			}
			n++
		}
	}
	if n < 10 {
		t.Fatalf("found only %d arbor command lines in the README's sh blocks", n)
	}

	db := filepath.Join(t.TempDir(), "db")
	mustInProcess(t, []byte("a/1\t1\na/2\t2\na/3\t3\nb/1\t4\nc/1\t5\n"), "--db", db, "import", "-")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"export", "--limit", "2"}, "a/1\t1\na/2\t2\n"},
		{[]string{"export", "--prefix", "a/", "--start", "a/2", "--limit", "1"}, "a/2\t2\n"},
		{[]string{"export", "--end", "a/2", "--json"}, `{"key":"a/1","value":"1"}` + "\n"},
		{[]string{"scan", "--start", "b", "--end", "c"}, "b/1\t4\n"},
		{[]string{"count"}, "5\n"},
		{[]string{"count", "--prefix", "a/"}, "3\n"},
		{[]string{"count", "--start", "a/2", "--end", "c"}, "3\n"},
		{[]string{"count", "--prefix", "a/", "--start", "a/3"}, "1\n"},
		{[]string{"count", "--prefix", "z/"}, "0\n"},
		{[]string{"count", "--start", "c", "--end", "a"}, "0\n"},
	} {
		if got := mustInProcess(t, nil, append([]string{"--db", db}, c.args...)...); got != c.want {
			t.Errorf("%v = %q, want %q", c.args, got, c.want)
		}
	}
	// On a store of many nodes, a count (from the nodes along the range's
	// edges) agrees with the records an export lists.
	var in strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&in, "%s%05d\tv\n", []string{"a/", "b/", "c/"}[i%3], i)
	}
	big := filepath.Join(t.TempDir(), "big")
	mustInProcess(t, []byte(in.String()), "--db", big, "import", "-")
	for _, f := range [][]string{{"--prefix", "b/"}, {"--start", "a/10000", "--end", "b/05000"}, {"--prefix", "c/", "--end", "c/12345"}} {
		want := strings.Count(mustInProcess(t, nil, append([]string{"--db", big, "export"}, f...)...), "\n")
		if got := mustInProcess(t, nil, append([]string{"--db", big, "count"}, f...)...); got != fmt.Sprintf("%d\n", want) {
			t.Errorf("count %v = %q, export %v has %d lines", f, got, f, want)
		}
	}
}

// TestCLIBareHelpAndVersion: 'arbor', 'arbor help [COMMAND]' and 'arbor
// --version' work.
func TestCLIBareHelpAndVersion(t *testing.T) {
	r := runArbor(t, "")
	if r.code != 0 || !strings.Contains(r.stdout, "Commands:") || !strings.Contains(r.stdout, "sync") {
		t.Fatalf("bare arbor: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if out := mustRun(t, "", "help"); out != r.stdout {
		t.Errorf("arbor help differs from bare arbor:\n%s", out)
	}
	if out := mustRun(t, "", "help", "sync"); !strings.Contains(out, "--token-file") || !strings.Contains(out, "Example") {
		t.Errorf("arbor help sync:\n%s", out)
	}
	if r := runArbor(t, "", "help", "frobnicate"); r.code != 2 || !strings.Contains(r.stderr, "frobnicate") {
		t.Errorf("arbor help frobnicate: exit %d, stderr %q", r.code, r.stderr)
	}
	v := mustRun(t, "", "--version")
	if !strings.HasPrefix(v, "arbor ") || v != mustRun(t, "", "version") {
		t.Errorf("--version = %q, version = %q", v, mustRun(t, "", "version"))
	}
	// A usage error says where to look.
	if r := runArbor(t, "", "export", "--limit", "x"); r.code != 2 || !strings.Contains(r.stderr, "arbor help export") {
		t.Errorf("usage error: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestVersionString: -ldflags wins; else the module version the go
// command recorded ('go install …@v1.2.3' records v1.2.3); else dev.
func TestVersionString(t *testing.T) {
	defer func(v string, f func() (*debug.BuildInfo, bool)) { version, readBuildInfo = v, f }(version, readBuildInfo)
	info := func(v string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Path: "github.com/arbor-sync/arbor", Version: v}, Settings: settings}, true
		}
	}
	for _, c := range []struct {
		ldflags string
		info    func() (*debug.BuildInfo, bool)
		want    string
	}{
		{"v9.9.9", info("v1.2.3"), "v9.9.9"},
		{"", info("v1.2.3"), "v1.2.3"},
		{"", info("v0.0.0-20260101000000-0123456789ab+dirty"), "v0.0.0-20260101000000-0123456789ab+dirty"},
		{"", info("(devel)", debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}, debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "dev (0123456789ab+dirty)"},
		{"", info("(devel)"), "dev"},
		{"", func() (*debug.BuildInfo, bool) { return nil, false }, "dev"},
	} {
		version, readBuildInfo = c.ldflags, c.info
		if got := versionString(); got != c.want {
			t.Errorf("ldflags %q: version %q, want %q", c.ldflags, got, c.want)
		}
	}
	version, readBuildInfo = "", info("v1.2.3")
	if out := mustInProcess(t, nil, "--version"); out != "arbor v1.2.3\n" {
		t.Errorf("--version = %q", out)
	}
}

// TestErrorLine: one "arbor: " prefix, also for the library's errors that
// begin with their package name.
func TestErrorLine(t *testing.T) {
	for in, want := range map[string]string{
		"key \"x\" not found":                          "arbor: key \"x\" not found",
		"arbor: write refused on a partial replica: x": "arbor: write refused on a partial replica: x",
		"arbor server: listen: x":                      "arbor: arbor server: listen: x",
	} {
		if got := errorLine(errString(in)); got != want {
			t.Errorf("errorLine(%q) = %q, want %q", in, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestCLICompletion: 'arbor completion SHELL' prints a script, and the
// binary answers the shell's completion requests.
func TestCLICompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -o default -C", "zsh": "bashcompinit", "fish": "complete -f -c arbor"} {
		if out := mustRun(t, "", "completion", shell); !strings.Contains(out, want) || !strings.Contains(out, binary) {
			t.Errorf("completion %s:\n%s", shell, out)
		}
	}
	if r := runArbor(t, "", "completion", "tcsh"); r.code != 2 {
		t.Errorf("completion tcsh: exit %d", r.code)
	}
	complete := func(line string) []string {
		r := runArborEnv(t, []string{"COMP_LINE=" + line, "COMP_POINT="}, "")
		if r.code != 0 {
			t.Fatalf("COMP_LINE=%q: exit %d, stderr %q", line, r.code, r.stderr)
		}
		var words []string
		sc := bufio.NewScanner(strings.NewReader(r.stdout))
		for sc.Scan() {
			words = append(words, sc.Text())
		}
		return words
	}
	if got := complete("arbor sy"); strings.Join(got, " ") != "sync" {
		t.Errorf("arbor sy<TAB> = %q", got)
	}
	got := strings.Join(complete("arbor sync --tok"), " ")
	if !strings.Contains(got, "--token-file") || !strings.Contains(got, "--token") {
		t.Errorf("arbor sync --tok<TAB> = %q", got)
	}
	if got := complete("arbor completion "); strings.Join(got, " ") != "bash fish zsh" && len(got) != 3 {
		t.Errorf("arbor completion <TAB> = %q", got)
	}
}

// TestCLIExampleDataset: 'arbor example' makes the dataset the README's
// quickstart imports: the same records for the same seed, spread over the
// prefixes the partial-replica examples select.
func TestCLIExampleDataset(t *testing.T) {
	out := mustInProcess(t, nil, "example", "--records", "400")
	if out != mustInProcess(t, nil, "example", "--records", "400") {
		t.Fatal("the same seed gave different datasets")
	}
	if lines := strings.Count(out, "\n"); lines != 400 {
		t.Fatalf("%d lines, want 400", lines)
	}
	db := filepath.Join(t.TempDir(), "db")
	mustInProcess(t, []byte(out), "--db", db, "import", "-")
	for _, p := range []string{"a/", "b/", "shared/", "user/"} {
		if n := mustInProcess(t, nil, "--db", db, "count", "--prefix", p); n != "100\n" {
			t.Errorf("count --prefix %s = %q, want 100", p, n)
		}
	}
	js := mustInProcess(t, nil, "example", "--records", "400", "--json")
	db2 := filepath.Join(t.TempDir(), "db2")
	mustInProcess(t, []byte(js), "--db", db2, "import", "--format", "jsonl", "-")
	if a, b := mustInProcess(t, nil, "--db", db, "root"), mustInProcess(t, nil, "--db", db2, "root"); a != b {
		t.Errorf("the TSV and JSON datasets differ: roots %s and %s", a, b)
	}
}

// TestCLISyncAdoptOrMerge: a store with records that never synced with
// the server stops with a reason naming --adopt and --merge; each works.
func TestCLISyncAdoptOrMerge(t *testing.T) {
	const tok = "tok-a-0123456789abcdef"
	_, a, b, addr, fp := serveTwoClients(t, tok+" laptop-a\n", "k1\tserver\nk2\tv2\n")
	env := []string{"ARBOR_TOKEN=" + tok}
	for _, db := range []string{a, b} {
		mustRun(t, "k1\tlocal\nk3\tonly-local\n", "--db", db, "import", "-")
		r := runArborEnv(t, env, "", "--db", db, "sync", "--server", addr, "--fingerprint", fp)
		if r.code == 0 || !strings.Contains(r.stderr, "--adopt") || !strings.Contains(r.stderr, "--merge") {
			t.Fatalf("sync of an unsynced store with records: exit %d, stderr %q", r.code, r.stderr)
		}
	}
	if r := runArborEnv(t, env, "", "--db", a, "sync", "--server", addr, "--fingerprint", fp, "--adopt", "--merge"); r.code == 0 || !strings.Contains(r.stderr, "choose one") {
		t.Fatalf("--adopt --merge: exit %d, stderr %q", r.code, r.stderr)
	}
	r := runArborEnv(t, env, "", "--db", a, "sync", "--server", addr, "--fingerprint", fp, "--adopt", "--json")
	var res struct {
		Discarded []struct {
			Key, Local string
			Server     *string
		}
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.Discarded) != 2 {
		t.Fatalf("sync --adopt: exit %d, stdout %q, stderr %q; want k1 and k3 discarded", r.code, r.stdout, r.stderr)
	}
	if got := mustRun(t, "", "--db", a, "export"); got != "k1\tserver\nk2\tv2\n" {
		t.Fatalf("after --adopt: %q", got)
	}
	if r := runArborEnv(t, env, "", "--db", b, "sync", "--server", addr, "--fingerprint", fp, "--merge"); r.code != 0 {
		t.Fatalf("sync --merge: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := mustRun(t, "", "--db", b, "export"); got != "k1\tserver\nk2\tv2\nk3\tonly-local\n" {
		t.Fatalf("after --merge: %q", got)
	}
}

// TestREADMEQuickstart runs the README's quickstart shell blocks, as
// written, in an empty folder with this binary on the PATH. Only what a
// script cannot do as a person would is changed: the server runs in the
// background on a free port, is signalled by its process id, the live
// mirror stops after a few seconds, and the expected refusal is allowed.
func TestREADMEQuickstart(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	q := s[strings.Index(s, "## Quickstart"):]
	q = q[:strings.Index(q, "\n## ")] // up to the next section
	port := freeUDPPort(t)
	script := []string{"set -eu", "trap 'kill -INT ${SERVE_PID:-} 2>/dev/null || true' EXIT"}
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(q, -1) {
		for line := range strings.Lines(block[1]) {
			line = strings.TrimSpace(strings.ReplaceAll(line, "127.0.0.1:4433", "127.0.0.1:"+port))
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
				continue
			case strings.Contains(line, " serve "):
				line, _, _ = strings.Cut(line, "|")
				line += "> serve.log 2> serve.err & SERVE_PID=$!\n" +
					"for i in $(seq 100); do grep -q '^fingerprint: ' serve.log && break; sleep 0.1; done"
			case strings.HasPrefix(line, "pkill -HUP"):
				line = "kill -HUP $SERVE_PID\n" +
					"for i in $(seq 100); do grep -q 'reloaded tokens' serve.err && break; sleep 0.1; done"
			case strings.Contains(line, "--watch"):
				line = "timeout -s INT 3 " + line + " || [ $? = 124 ]"
			case strings.Contains(line, "refused locally"):
				line = "! " + line
			}
			script = append(script, line)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-c", strings.Join(script, "\n"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"), "ARBOR_DB=", "ARBOR_TOKEN=", "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the quickstart failed: %v\nscript:\n%s\noutput:\n%s", err, strings.Join(script, "\n"), out)
	}
	for _, want := range []string{"imported 10000 records", "pulled 10000", "accepted 1", "\n2501\n", "pulled 5000", "\n5000\n", "outside scope", "imported 10001 records"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quickstart output lacks %q:\n%s", want, out)
		}
	}
	laptop := mustRun(t, "", "--db", filepath.Join(dir, "laptop"), "root")
	if got := mustRun(t, "", "--db", filepath.Join(dir, "copy"), "root"); got != laptop {
		t.Errorf("the JSON-lines copy's root %s differs from laptop's %s", got, laptop)
	}
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) string {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}

// TestCLIServeJSON: 'serve --json' announces itself in one JSON line.
func TestCLIServeJSON(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok-a-0123456789abcdef a\n"), 0o600)
	cmd, stdout, stderr := startArbor(t, "--db", filepath.Join(dir, "srv"), "serve", "--init", "--listen", "127.0.0.1:0", "--tokens", tokens, "--json")
	defer cmd.Wait()
	defer cmd.Process.Signal(os.Interrupt)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("serve --json: %v (stderr %q)", err, stderr.String())
	}
	var v struct{ Listen, Root, Fingerprint string }
	if err := json.Unmarshal([]byte(line), &v); err != nil || !strings.HasPrefix(v.Listen, "127.0.0.1:") || len(v.Root) != 32 || len(v.Fingerprint) != 64 {
		t.Fatalf("serve --json line %q: %+v, %v", line, v, err)
	}
}

// TestCLICacheSize: --cache-mb sets the node cache of any command that
// opens a store (serve included); a negative size is refused.
func TestCLICacheSize(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	mustRun(t, "", "--cache-mb", "8", "--db", db, "put", "k", "v")
	if got := mustRun(t, "", "--cache-mb", "8", "--db", db, "get", "k"); strings.TrimSpace(got) != "v" {
		t.Fatalf("get = %q", got)
	}
	if r := runArbor(t, "", "--cache-mb=-1", "--db", db, "get", "k"); r.code == 0 || !strings.Contains(r.stderr, "--cache-mb -1") {
		t.Fatalf("a negative cache size: exit %d, %q", r.code, r.stderr)
	}
}

// TestMemoryLimit: a command's soft memory limit follows its node cache,
// and GOMEMLIMIT, when set, wins.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		cacheMB    int64
		goMemLimit string
		want       int64
		ok         bool
	}{
		{0, "", defaultCacheMB<<20 + memoryHeadroom, true},
		{1024, "", 1024<<20 + memoryHeadroom, true},
		{8, "", 8<<20 + memoryHeadroom, true},
		{0, "2GiB", 0, false},
		{1024, "off", 0, false},
	} {
		if tc.ok && pebbleInGoHeap {
			tc.want += tree.DefaultPebbleCacheSize
		}
		c := cli{CacheMB: tc.cacheMB}
		got, ok := memoryLimit(c.cacheBytes(), tc.goMemLimit)
		if got != tc.want || ok != tc.ok {
			t.Errorf("cache %d MiB, GOMEMLIMIT %q: limit %d, %v; want %d, %v", tc.cacheMB, tc.goMemLimit, got, ok, tc.want, tc.ok)
		}
	}
}
