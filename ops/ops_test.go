package ops_test

import (
	"context"
	"errors"
	"io"
	stdnet "net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/ops"
)

const tok = "tok-ops-0123456789abcdef"

// serve runs a real sync server on loopback with the metrics wired as
// 'arbor serve --metrics' wires them, and the ops handler on its own HTTP
// listener; it returns the server, its client options and the base URL.
func serve(t *testing.T) (*arbor.Server, arbor.SyncOptions, string) {
	t.Helper()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	for i := range 50 {
		if err := db.Put(ctx, []byte("k"+strconv.Itoa(i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	m := ops.NewMetrics()
	srv, err := arbor.NewServer(db, arbor.ServerOptions{
		Tokens: []arbor.Token{{Token: tok, ClientID: "laptop"}}, CertDir: t.TempDir(), OnCommit: m.ObserveCommit})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Register(srv, ops.StoreSize(db.Store().DiskSize), ops.StorePebble(db.Store().PebbleStats)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-served })

	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ops.Handler(m, func() error {
		if !srv.Ready() {
			return errors.New("draining")
		}
		return nil
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return srv, arbor.SyncOptions{Server: srv.Addr().String(), Token: tok, Fingerprint: srv.Fingerprint()}, "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
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

// sample returns the value of one sample line of the exposition text
// ("name{labels} value"), or -1 if it is absent.
func sample(text, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestMetricsAfterSyncs: a clone, a push with a conflict and a refused
// token show in /metrics, read from the server's counters at scrape time.
func TestMetricsAfterSyncs(t *testing.T) {
	srv, opts, base := serve(t)
	ctx := context.Background()
	client, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Sync(ctx, opts); err != nil {
		t.Fatal(err)
	}
	client.Put(ctx, []byte("k1"), []byte("mine"))
	client.Put(ctx, []byte("new"), []byte("mine"))
	if _, err := client.Sync(ctx, opts); err != nil {
		t.Fatal(err)
	}
	bad := opts
	bad.Token = "no-such-token-0123456789"
	if _, err := arbor.ServerRoot(ctx, bad); !errors.Is(err, arbor.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Sessions > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	code, text := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	want := map[string]float64{
		`arbor_server_sessions_started_total`:               2,
		`arbor_server_sessions`:                             0,
		`arbor_server_refused_total{reason="unauthorized"}`: 1,
		`arbor_server_refused_total{reason="busy"}`:         0,
		`arbor_server_pushes_total`:                         1,
		`arbor_server_syncs_total{path="push"}`:             1,
		`arbor_server_changes_total{outcome="accepted"}`:    2,
		`arbor_server_changes_total{outcome="overridden"}`:  0,
		`arbor_server_changes_total{outcome="rejected"}`:    0,
		`arbor_server_pushes_refused_total`:                 0,
		`arbor_server_commit_duration_seconds_count`:        1,
		`arbor_server_commit_changes_sum`:                   2,
		`arbor_server_watchers`:                             0,
		`arbor_server_handshakes`:                           0,
	}
	for series, v := range want {
		if got := sample(text, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	positive := []string{`arbor_server_received_bytes_total`, `arbor_server_sent_bytes_total`,
		`arbor_server_retained_roots`, `arbor_store_disk_bytes`, `go_goroutines`,
		`arbor_pebble_memtable_bytes`, `arbor_pebble_wal_written_bytes_total`}
	for _, series := range positive {
		if got := sample(text, series); got <= 0 {
			t.Errorf("%s = %v, want > 0", series, got)
		}
	}
	// A small store lives in its memtable: these are present, maybe zero.
	for _, series := range []string{`arbor_pebble_block_cache_lookups_total{result="hit"}`, `arbor_pebble_block_cache_lookups_total{result="miss"}`,
		`arbor_pebble_compaction_debt_bytes`, `arbor_pebble_read_amplification`, `arbor_pebble_l0_files`, `arbor_pebble_tables`} {
		if !strings.Contains(text, series+" ") {
			t.Errorf("%s missing:\n%s", series, grep(text, "pebble"))
		}
	}
	if sample(text, `arbor_server_syncs_total{path="tree"}`)+sample(text, `arbor_server_syncs_total{path="walk"}`) <= 0 {
		t.Errorf("the clone counted neither a tree nor a walk request:\n%s", grep(text, "syncs_total"))
	}
	if !strings.Contains(text, `arbor_server_memory_used_bytes `) {
		t.Error("no arbor_server_memory_used_bytes")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grep(text, "arbor_"))
	}
}

func grep(text, sub string) string {
	var out []string
	for l := range strings.Lines(text) {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestHealthAndReadiness: /healthz is 200 throughout; /readyz is 200 while
// the server listens and 503 once it drains.
func TestHealthAndReadiness(t *testing.T) {
	srv, _, base := serve(t)
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz while serving: %d %q", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srv.Drain(ctx)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d", code)
	}
	resp, err := http.Post(base+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", resp.StatusCode)
	}
}
