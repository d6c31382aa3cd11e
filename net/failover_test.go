package net

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// cluster starts n servers of st that share one certificate (one
// directory's), as the servers of a cluster do; stop[i] ends server i.
func cluster(t testing.TB, st *tree.Store, n int, mut func(*ServerOptions)) (ts []*testServer, stop []func()) {
	t.Helper()
	dir := t.TempDir()
	for range n {
		s, halt := serveStore(t, st, dir, mut)
		ts, stop = append(ts, s), append(stop, halt)
	}
	for _, s := range ts[1:] {
		if s.fp != ts[0].fp {
			t.Fatalf("servers of one certificate directory have fingerprints %s and %s", ts[0].fp, s.fp)
		}
	}
	return ts, stop
}

// deadAddr returns a loopback UDP address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	pc, err := stdnet.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clusterOpts are client options naming servers, pinned to fp, with a
// short dial timeout so that a dead server fails over quickly.
func clusterOpts(fp string, servers ...string) (ClientOptions, *logBuffer) {
	logs := &logBuffer{}
	return ClientOptions{Servers: servers, Token: alice, Fingerprint: fp, DialTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}, logs
}

// TestFailoverDeadFirstServer: the first server of the list does not
// listen: Sync, Root and Watch go on with the second, and the failover is
// reported and logged.
func TestFailoverDeadFirstServer(t *testing.T) {
	st := openStore(t, t.TempDir(), smallChunks)
	put(t, st, 0, 500, 1)
	ts, _ := cluster(t, st, 1, nil)
	live, dead := ts[0], deadAddr(t)
	opts, logs := clusterOpts(live.fp, dead, live.addr)

	c := openStore(t, t.TempDir(), smallChunks)
	res := mustSync(t, c, opts)
	if res.Failovers != 1 || res.Server != live.addr {
		t.Fatalf("failovers %d, server %q; want 1, %q", res.Failovers, res.Server, live.addr)
	}
	checkConverged(t, live, c)
	if l := logs.String(); !strings.Contains(l, "failing over") || !strings.Contains(l, dead) || !strings.Contains(l, "level=WARN") {
		t.Fatalf("the failover was not logged at Warn with the server: %q", l)
	}

	root, server, err := RootFrom(context.Background(), opts)
	if err != nil || root != ref(t, st, HeadRef) || server != live.addr {
		t.Fatalf("RootFrom: %s from %q, %v", root.Short(), server, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watched node.Hash
	err = Watch(ctx, opts, func(r node.Hash) error {
		watched = r
		cancel()
		return nil
	})
	if err != nil || watched != ref(t, st, HeadRef) {
		t.Fatalf("Watch: root %s, %v", watched.Short(), err)
	}

	// A sync with nothing to do reports the server too, without failover.
	opts.Servers = []string{live.addr, dead}
	if res := mustSync(t, c, opts); res.Failovers != 0 || res.Server != live.addr {
		t.Fatalf("failovers %d, server %q", res.Failovers, res.Server)
	}
}

// TestFailoverMidClone: the server of a clone of 200k records stops part
// way; the clone completes on another server of the cluster, fetching
// only what the store does not hold: exactly the nodes it lacks, and far
// less than a second clone's bytes.
func TestFailoverMidClone(t *testing.T) {
	// Keep the fetchers close behind the walker, so that when the server
	// stops most of the tree is yet to be sent (else the clone may have
	// arrived whole, and the stop end nothing).
	oldQueue := walkQueueBytes
	walkQueueBytes = 256 << 10
	defer func() { walkQueueBytes = oldQueue }()

	const n = 200_000
	st := openStore(t, t.TempDir(), chunker.Config{})
	put(t, st, 0, n, 1)
	ts, stop := cluster(t, st, 2, nil)
	a, b := ts[0], ts[1]
	target := ref(t, st, HeadRef)
	all := reachable(t, st, target)

	// A whole clone, for comparison.
	full := mustSync(t, openStore(t, t.TempDir(), chunker.Config{}), a.opts(alice))

	c := openStore(t, t.TempDir(), chunker.Config{})
	opts, _ := clusterOpts(a.fp, a.addr, b.addr)
	var stopped bool
	held, priorNodes := -1, int64(0)
	opts.Progress = func(p Progress) {
		switch {
		case p.Server == a.addr && p.Phase == "walk" && p.Records >= n/5 && !stopped:
			stopped = true
			stop[0]() // the connection is closed when it returns
		case p.Server == b.addr && p.Phase == "connect":
			held, priorNodes = countHeld(t, c, all), p.Nodes
		}
	}
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if !stopped || res.Failovers != 1 || res.Server != b.addr {
		t.Fatalf("stopped %v, failovers %d, server %q; want a failover to %q", stopped, res.Failovers, res.Server, b.addr)
	}
	if held <= 0 || held >= len(all) {
		t.Fatalf("the interrupted clone kept %d of %d nodes", held, len(all))
	}
	if got := int64(res.NodesFetched) - priorNodes; got != int64(len(all)-held) {
		t.Fatalf("the resumed clone fetched %d nodes; %d in the tree, %d held", got, len(all), held)
	}
	if res.Root != target || res.ServerRoot != target {
		t.Fatalf("root %s, server root %s, want %s", res.Root.Short(), res.ServerRoot.Short(), target.Short())
	}
	checkConverged(t, b, c)
	if _, err := c.Verify(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	if res.BytesReceived >= full.BytesReceived*3/2 {
		t.Fatalf("the clone with a failover received %d bytes, a whole clone %d", res.BytesReceived, full.BytesReceived)
	}
	t.Logf("whole clone %d bytes; with a failover %d bytes, %d of %d nodes kept", full.BytesReceived, res.BytesReceived, held, len(all))
}

// TestFailoverMidPush: the server of a push commits it and dies before it
// replies; the sync re-sends the push to the next server, which holds
// every change after it. With one store behind both servers (a cluster's
// shared storage) the second finds the changes applied and accepts them;
// with a store of its own, it applies them.
func TestFailoverMidPush(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			dir := t.TempDir()
			stA := openStore(t, filepath.Join(dir, "a"), smallChunks)
			stB := stA
			if !shared {
				stB = openStore(t, filepath.Join(dir, "b"), smallChunks)
			}
			put(t, stA, 0, 1000, 1)
			if !shared {
				put(t, stB, 0, 1000, 1)
			}
			if ref(t, stA, HeadRef) != ref(t, stB, HeadRef) {
				t.Fatal("identical records, different roots")
			}
			a, stopA := serveStore(t, stA, dir, nil)
			b, _ := serveStore(t, stB, dir, nil)
			var died atomic.Bool
			a.srv.afterPush = func(sess *session, _ node.Hash, _ []pushChange, _ []uint64) {
				if !died.Swap(true) {
					sess.qc.CloseWithError(0, "test: killed after the commit")
					go stopA()
				}
			}

			c := openStore(t, t.TempDir(), smallChunks)
			opts, _ := clusterOpts(a.fp, a.addr, b.addr)
			mustSync(t, c, opts)
			var edits []tree.Edit
			for i := 0; i < 1000; i += 7 {
				edits = append(edits, tree.Edit{Key: rec(i), Value: []byte(fmt.Sprintf("mine-%d", i))})
			}
			edits = append(edits, tree.Edit{Key: rec(3), Delete: true}, tree.Edit{Key: []byte("new-key"), Value: []byte("new")})
			edit(t, c, edits...)

			res := mustSync(t, c, opts)
			if !died.Load() || res.Failovers != 1 || res.Server != b.addr {
				t.Fatalf("died %v, failovers %d, server %q", died.Load(), res.Failovers, res.Server)
			}
			if res.Pushed != len(edits) || res.Accepted != len(edits) || len(res.Overridden) != 0 {
				t.Fatalf("pushed %d, accepted %d, overridden %d; want %d, %d, 0", res.Pushed, res.Accepted, len(res.Overridden), len(edits), len(edits))
			}
			checkConverged(t, b, c)
			root := ref(t, stB, HeadRef)
			for _, e := range edits {
				got := get(t, stB, root, e.Key)
				if e.Delete != (got == nil) || (!e.Delete && *got != string(e.Value)) {
					t.Fatalf("server b: %s = %v after the push", e.Key, got)
				}
			}
		})
	}
}

// TestFailoverNotOnRefusal: what every server would answer alike ends the
// sync at the first: a refused token, a certificate that does not match
// the pin. A draining server, on the contrary, is failed over.
func TestFailoverNotOnRefusal(t *testing.T) {
	st := openStore(t, t.TempDir(), smallChunks)
	put(t, st, 0, 100, 1)
	ts, _ := cluster(t, st, 2, nil)
	a, b := ts[0], ts[1]
	c := openStore(t, t.TempDir(), smallChunks)

	opts, _ := clusterOpts(a.fp, a.addr, b.addr)
	opts.Token = "tok-wrong-0123456789"
	if _, err := Sync(context.Background(), c, opts); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	// The server counts the refusal after telling the client.
	eventually(t, "the first server's refusal counted", func() bool { return a.srv.Stats().Refused["unauthorized"] >= 1 })
	if ra, rb := a.srv.Stats().Refused["unauthorized"], b.srv.Stats().Refused["unauthorized"]; ra != 1 || rb != 0 {
		t.Fatalf("unauthorized refusals: first server %d, second %d; want 1, 0", ra, rb)
	}

	// A server of another certificate first in the list.
	other := startServer(t, smallChunks, nil)
	opts, _ = clusterOpts(a.fp, other.addr, b.addr)
	if _, err := Sync(context.Background(), c, opts); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("another certificate: %v", err)
	}
	if s := b.srv.Stats(); s.SessionsStarted != 0 {
		t.Fatalf("the second server was tried after a certificate mismatch: %d sessions", s.SessionsStarted)
	}
	if _, ok, _ := c.Ref(BaseRef); ok {
		t.Fatal("a refused sync moved base")
	}

	// Cancellation ends the sync at once.
	ctx, cancel := context.WithCancel(context.Background())
	opts, _ = clusterOpts(a.fp, a.addr, b.addr)
	opts.Progress = func(p Progress) {
		if p.Phase == "walk" {
			cancel()
		}
	}
	if _, err := Sync(ctx, c, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sync: %v", err)
	}
	if s := b.srv.Stats(); s.SessionsStarted != 0 {
		t.Fatalf("a cancelled sync went on to the second server: %d sessions", s.SessionsStarted)
	}

	// A draining server refuses connections: the next one serves.
	a.srv.Drain(context.Background())
	opts, _ = clusterOpts(a.fp, a.addr, b.addr)
	res := mustSync(t, c, opts)
	if res.Failovers != 1 || res.Server != b.addr {
		t.Fatalf("draining first server: failovers %d, server %q", res.Failovers, res.Server)
	}
	checkConverged(t, b, c)
}

// TestFailoverGivesUp: with every server dead, a sync fails after twice
// through the list, naming the servers, and changes nothing.
func TestFailoverGivesUp(t *testing.T) {
	d1, d2 := deadAddr(t), deadAddr(t)
	opts, logs := clusterOpts(strings.Repeat("ab", 32), d1, d2)
	opts.DialTimeout = 200 * time.Millisecond
	c := openStore(t, t.TempDir(), smallChunks)
	_, err := Sync(context.Background(), c, opts)
	if err == nil || !strings.Contains(err.Error(), d1) || !strings.Contains(err.Error(), d2) || !strings.Contains(err.Error(), "4 attempts") {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Count(logs.String(), "failing over"); got != 3 {
		t.Fatalf("%d failovers logged, want 3:\n%s", got, logs.String())
	}
}

// TestClusterPinAcrossServers: the pin a store keeps (trusted on first
// use through one server of a cluster) is the certificate's, not an
// address's: a later sync through another server of the cluster uses it,
// and a server of another certificate is refused.
func TestClusterPinAcrossServers(t *testing.T) {
	st := openStore(t, t.TempDir(), smallChunks)
	put(t, st, 0, 100, 1)
	ts, _ := cluster(t, st, 2, nil)
	a, b := ts[0], ts[1]
	c := openStore(t, t.TempDir(), smallChunks)

	opts, _ := clusterOpts("", deadAddr(t), a.addr)
	opts.TrustOnFirstUse = true
	if res := mustSync(t, c, opts); res.Server != a.addr {
		t.Fatalf("server %q", res.Server)
	}
	if pin, err := c.Meta(metaFingerprint); err != nil || string(pin) != a.fp {
		t.Fatalf("stored pin %q, %v; want %s", pin, err, a.fp)
	}
	// No pin given, no trust flag: the stored pin trusts b.
	put(t, st, 100, 120, 1)
	opts, _ = clusterOpts("", b.addr)
	if res := mustSync(t, c, opts); res.Server != b.addr || res.Pulled != 20 {
		t.Fatalf("server %q, pulled %d", res.Server, res.Pulled)
	}
	checkConverged(t, b, c)
	// A server of another certificate is refused by the stored pin.
	other := startServer(t, smallChunks, nil)
	opts, _ = clusterOpts("", other.addr, b.addr)
	if _, err := Sync(context.Background(), c, opts); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("another certificate: %v", err)
	}
}

// TestFollowPrefersLastServer: a follower with a dead first server syncs
// through the second and starts its next syncs there, with no failover.
func TestFollowPrefersLastServer(t *testing.T) {
	st := openStore(t, t.TempDir(), smallChunks)
	put(t, st, 0, 100, 1)
	ts, _ := cluster(t, st, 1, nil)
	live := ts[0]
	c := openStore(t, t.TempDir(), smallChunks)
	opts, _ := clusterOpts(live.fp, deadAddr(t), live.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var results []*SyncResult
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, c, opts, FollowOptions{OnSync: func(res *SyncResult, err error) {
			if err == nil {
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		}})
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(results)
	}
	eventually(t, "the first sync", func() bool { return count() >= 1 })
	want := put(t, st, 100, 110, 1)
	// The base moves inside the sync, OnSync follows: wait for both.
	eventually(t, "a sync of the server's change", func() bool { return ref(t, c, BaseRef) == want && count() >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if results[0].Failovers != 1 || results[0].Server != live.addr {
		t.Fatalf("first sync: failovers %d, server %q", results[0].Failovers, results[0].Server)
	}
	for _, r := range results[1:] {
		if r.Failovers != 0 || r.Server != live.addr {
			t.Fatalf("later sync: failovers %d, server %q; want it to start at %s", r.Failovers, r.Server, live.addr)
		}
	}
	if len(results) < 2 {
		t.Fatalf("%d syncs", len(results))
	}
}

// TestServerList: Server comes first, then Servers, without repeats or
// blanks; preferServer rotates the list; malformed addresses are refused
// before any connection.
func TestServerList(t *testing.T) {
	o := ClientOptions{Server: "a:1", Servers: []string{"b:2", " a:1", "", "c:3", "b:2"}}
	if got := strings.Join(o.ServerList(), ","); got != "a:1,b:2,c:3" {
		t.Fatalf("ServerList = %s", got)
	}
	if got := strings.Join(preferServer(o, "c:3").ServerList(), ","); got != "c:3,a:1,b:2" {
		t.Fatalf("preferServer = %s", got)
	}
	if got := strings.Join(preferServer(o, "z:9").ServerList(), ","); got != "a:1,b:2,c:3" {
		t.Fatalf("preferServer of an unknown server = %s", got)
	}
	if _, err := serverList(ClientOptions{}); err == nil {
		t.Fatal("no server accepted")
	}
	if _, err := serverList(ClientOptions{Servers: []string{"a:1", "no-port"}}); err == nil || !strings.Contains(err.Error(), "no-port") {
		t.Fatalf("malformed address: %v", err)
	}
}

// TestCanFailOver sorts errors into those another server may not repeat
// and those it would.
func TestCanFailOver(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&quic.IdleTimeoutError{}, true},
		{fmt.Errorf("walk: %w", &quic.StatelessResetError{}), true},
		{&quic.ApplicationError{Remote: true, ErrorCode: 0, ErrorMessage: "server shutting down"}, true},
		{remoteError("server x", errorMsg{Code: codeLimit, Message: "server draining"}), true},
		{remoteError("server x", errorMsg{Code: codeInternal, Message: "disk"}), true},
		{io.ErrUnexpectedEOF, true},
		{syscall.ECONNRESET, true},
		{remoteError("server x", errorMsg{Code: codeUnauthorized}), false},
		{remoteError("server x", errorMsg{Code: codeProtocol}), false},
		{remoteError("server x", errorMsg{Code: codeRefused}), false},
		{&quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(codeUnauthorized)}, false},
		{fmt.Errorf("%w: pinned", ErrFingerprint), false},
		{ErrNoSyncHistory, false},
		{ErrUnpushable, false},
		{fmt.Errorf("sync: %w", context.Canceled), false},
		{errors.New("local disk full"), false},
	} {
		if got := canFailOver(ctx, c.err); got != c.want {
			t.Errorf("canFailOver(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if canFailOver(cancelled, &quic.IdleTimeoutError{}) {
		t.Error("a cancelled operation fails over")
	}
}

// TestFailoverSilentDeath: the first server goes silent mid-clone, as a
// server killed with SIGKILL or cut off by the network does (no close, no
// reset: its packets just stop). The client counts it gone after its peer
// timeout, well before any frame's I/O timeout, and completes on the next.
func TestFailoverSilentDeath(t *testing.T) {
	oldQueue := walkQueueBytes
	walkQueueBytes = 256 << 10
	defer func() { walkQueueBytes = oldQueue }()
	const n = 100_000
	st := openStore(t, t.TempDir(), chunker.Config{})
	put(t, st, 0, n, 1)
	ts, _ := cluster(t, st, 2, nil)
	a, b := ts[0], ts[1]
	px := newCaptureProxy(t, a.addr)
	c := openStore(t, t.TempDir(), chunker.Config{})
	opts, _ := clusterOpts(a.fp, px.addr(), b.addr)
	opts.IOTimeout = time.Minute // the failover must not wait for it
	opts.PeerTimeout = 2 * time.Second
	var silenced time.Time
	opts.Progress = func(p Progress) {
		if p.Server == px.addr() && p.Phase == "walk" && p.Records >= n/5 && silenced.IsZero() {
			silenced = time.Now()
			px.blackhole.Store(true)
		}
	}
	res, err := Sync(context.Background(), c, opts)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if silenced.IsZero() || res.Failovers != 1 || res.Server != b.addr {
		t.Fatalf("silenced %v, failovers %d, server %q; want a failover to %q", !silenced.IsZero(), res.Failovers, res.Server, b.addr)
	}
	if waited := time.Since(silenced); waited >= opts.IOTimeout/2 {
		t.Fatalf("the failover took %v after the server went silent: the I/O timeout, not the peer timeout, found it", waited)
	}
	checkConverged(t, b, c)
}
