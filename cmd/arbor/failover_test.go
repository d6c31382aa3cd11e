package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
)

// deadServer returns a loopback UDP address nothing listens on.
func deadServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestCLISyncFailsOver: 'sync --server dead,live' syncs through the live
// server, says so on standard error and in --json, and remembers the list:
// a later 'sync --watch' without --server fails over the same way, then
// keeps to the live server. 'root --server' takes a list too.
func TestCLISyncFailsOver(t *testing.T) {
	const tok, tokB = "tok-a-0123456789abcdef", "tok-b-0123456789abcdef"
	dir, srv, tokens := serverDir(t, tok+" laptop\n"+tokB+" other\n", "k1\tv1\nk2\tv2\n")
	s := startServe(t, "--db", srv, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens)
	dead := deadServer(t)
	list := dead + "," + s.addr
	noEnv := []string{"ARBOR_TOKEN="}
	tokFile := filepath.Join(dir, "laptop.token")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	laptop := filepath.Join(dir, "laptop")

	type syncLine struct {
		Pulled    int
		Root      string
		Server    string
		Failovers int
		Error     string
	}
	r := runArborEnv(t, noEnv, "", "--db", laptop, "sync", "--server", list, "--token-file", tokFile, "--fingerprint", s.fp, "--json")
	var l syncLine
	if err := json.Unmarshal([]byte(r.stdout), &l); r.code != 0 || err != nil {
		t.Fatalf("sync: exit %d, stdout %q (%v), stderr %q", r.code, r.stdout, err, r.stderr)
	}
	if l.Server != s.addr || l.Failovers != 1 || l.Pulled != 2 {
		t.Fatalf("sync --json: %+v; want server %s, 1 failover, 2 pulled", l, s.addr)
	}
	if !strings.Contains(r.stderr, "failing over") || !strings.Contains(r.stderr, dead) {
		t.Fatalf("the failover is not on standard error: %q", r.stderr)
	}
	// Without --json the failover is in the report.
	mustRun(t, "", "--db", laptop, "put", "mine", "1")
	r = runArborEnv(t, noEnv, "", "--db", laptop, "sync")
	if r.code != 0 || !strings.Contains(r.stdout, "server: "+s.addr+", after 1 failovers") || !strings.Contains(r.stdout, "accepted 1") {
		t.Fatalf("plain sync with the remembered list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// root --server takes a list; --json names the server that answered.
	want := strings.TrimSpace(mustRun(t, "", "--db", laptop, "root"))
	r = runArborEnv(t, noEnv, "", "--db", laptop, "root", "--server", s.addr+","+dead, "--json")
	var rj struct{ Root, Server string }
	if err := json.Unmarshal([]byte(r.stdout), &rj); r.code != 0 || err != nil || rj.Root != want || rj.Server != s.addr {
		t.Fatalf("root --server list: exit %d, %q (%v), stderr %q", r.code, r.stdout, err, r.stderr)
	}
	if r := runArborEnv(t, noEnv, "", "--db", laptop, "sync", "--server", s.addr+",,"+dead); r.code == 0 || !strings.Contains(r.stderr, "empty address") {
		t.Fatalf("a list with an empty address: exit %d, stderr %q", r.code, r.stderr)
	}

	// sync --watch with the remembered list: the first sync fails over,
	// later ones start at the server that served it.
	cmd, stdout, stderr := startArborLive(t, "--db", laptop, "sync", "--watch", "--json")
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
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
				t.Fatalf("%s: the watcher ended; stderr %q", what, stderr.String())
			}
			if l.Error != "" {
				t.Fatalf("%s: %s", what, l.Error)
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no sync line; stderr %q", what, stderr.String())
		}
		panic("unreachable")
	}
	if l := next("the first sync"); l.Server != s.addr || l.Failovers != 1 {
		t.Fatalf("the watcher's first sync: %+v", l)
	}
	other := filepath.Join(dir, "other")
	mustRun(t, "", "--db", other, "sync", "--server", s.addr, "--token", tokB, "--fingerprint", s.fp)
	mustRun(t, "", "--db", other, "put", "from-other", "1")
	mustRun(t, "", "--db", other, "sync", "--token", tokB)
	want = strings.TrimSpace(mustRun(t, "", "--db", other, "root"))
	for l := next("the live pull"); ; l = next("the live pull") {
		if l.Server != s.addr || l.Failovers != 0 {
			t.Fatalf("a later sync of the watcher: %+v; want it to start at %s", l, s.addr)
		}
		if l.Root == want {
			break
		}
	}
}

// TestServerListParseAndRemember: --server splits on commas (spaces
// trimmed, repeats dropped, an empty or malformed address refused), and a
// store remembers the list as given and gives it back in order.
func TestServerListParseAndRemember(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "": an error
	}{
		{"a:1", "a:1"},
		{"a:1,b:2,c:3", "a:1,b:2,c:3"},
		{" a:1 , b:2,a:1", "a:1,b:2"},
		{"[::1]:4433,127.0.0.1:4433", "[::1]:4433,127.0.0.1:4433"},
		{"a:1,,b:2", ""},
		{"a:1,", ""},
		{"a:1,b", ""},
		{"", ""},
	} {
		got, err := parseServers(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("parseServers(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || joinServers(got) != c.want {
			t.Errorf("parseServers(%q) = %q, %v; want %s", c.in, got, err, c.want)
		}
	}

	ctx := context.Background()
	db, err := arbor.Open(filepath.Join(t.TempDir(), "db"), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if changed, err := remember(ctx, db, []string{"b:2", "a:1", "c:3"}, ""); err != nil || !changed {
		t.Fatalf("remember: %v, %v", changed, err)
	}
	if got := recall(db).server; got != "b:2,a:1,c:3" {
		t.Fatalf("recalled %q", got)
	}
	if changed, err := remember(ctx, db, []string{"b:2", "a:1", "c:3"}, ""); err != nil || changed {
		t.Fatalf("remembering the same list again: %v, %v", changed, err)
	}
	opts, _, err := clientOptions("", tokenFlags{Token: "t"}, trustFlags{}, recall(db))
	if err != nil || strings.Join(opts.ServerList(), ",") != "b:2,a:1,c:3" {
		t.Fatalf("options from the remembered list: %q, %v", opts.ServerList(), err)
	}
	// --server replaces the remembered list.
	opts, _, err = clientOptions("d:4", tokenFlags{Token: "t"}, trustFlags{}, recall(db))
	if err != nil || strings.Join(opts.ServerList(), ",") != "d:4" {
		t.Fatalf("options from --server: %q, %v", opts.ServerList(), err)
	}
	if changed, err := remember(ctx, db, []string{"d:4"}, ""); err != nil || !changed || recall(db).server != "d:4" {
		t.Fatalf("remember one server: %v, %v, %q", changed, err, recall(db).server)
	}
	// A follower starts at the server of its last good sync.
	o := startAt(arbor.SyncOptions{Servers: []string{"a:1", "b:2", "c:3"}}, "b:2")
	if got := strings.Join(o.ServerList(), ","); got != "b:2,c:3,a:1" {
		t.Fatalf("startAt = %s", got)
	}
}
