package net

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// eventually polls cond until it holds or the deadline passes (a liveness
// bound for the test, not a speed target).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestWatchReportsRootMoves checks that Watch reports the current root at
// once and then every later root, and that a session that only watches
// outlives the server's idle timeout thanks to heartbeats.
func TestWatchReportsRootMoves(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.IdleTimeout = 300 * time.Millisecond })
	put(t, ts.store, 0, 50, 1)
	opts := ts.opts(bob)
	opts.IOTimeout = 600 * time.Millisecond // heartbeats every 200 ms

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []node.Hash
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, opts, func(r node.Hash) error {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			return nil
		})
	}()
	seen := func(h node.Hash) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0 && got[len(got)-1] == h
		}
	}
	eventually(t, "the initial root", seen(ref(t, ts.store, HeadRef)))
	// Idle well past the server's idle timeout: heartbeats keep it open.
	time.Sleep(time.Second)
	for ver := 2; ver <= 4; ver++ {
		want := put(t, ts.store, ver, ver+10, ver)
		eventually(t, "a moved root", seen(want))
	}
	mu.Lock()
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Errorf("root %s reported twice in a row (heartbeats must not reach fn)", got[i].Short())
		}
	}
	mu.Unlock()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

func TestWatchRefusesBadToken(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	err := Watch(context.Background(), ts.opts("no-such-token"), func(node.Hash) error { return nil })
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Watch with a bad token: %v, want ErrUnauthorized", err)
	}
	stop := errors.New("stop")
	if err := Watch(context.Background(), ts.opts(alice), func(node.Hash) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Watch returned %v, want fn's error", err)
	}
}

// TestFollowConverges runs two followers against one server: writes on the
// server and on either client reach every replica without anyone calling
// Sync, and a follower outlives a server restart.
func TestFollowConverges(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "data"), smallChunks)
	ts, stopServer := serveStore(t, st, dir, nil)
	put(t, ts.store, 0, 100, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := []*tree.Store{
		openStore(t, t.TempDir(), smallChunks),
		openStore(t, t.TempDir(), smallChunks),
	}
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	var syncs [2]int
	var mu sync.Mutex
	for i, c := range clients {
		opts := ts.opts([]string{alice, bob}[i])
		opts.IOTimeout = 2 * time.Second
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Follow(ctx, c, opts, FollowOptions{
				MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
				OnSync: func(*SyncResult, error) { mu.Lock(); syncs[i]++; mu.Unlock() },
			})
		}()
	}
	converged := func() bool {
		want := ref(t, ts.store, HeadRef)
		for _, c := range clients {
			if h, _, _ := c.Ref(HeadRef); h != want {
				return false
			}
			if b, _, _ := c.Ref(BaseRef); b != want {
				return false
			}
		}
		return true
	}
	eventually(t, "the initial clone", converged)

	put(t, ts.store, 100, 120, 1) // a server-side write
	eventually(t, "a server write to reach both clients", converged)

	edit(t, clients[0], tree.Edit{Key: rec(5), Value: []byte("from client 0")})
	eventually(t, "client 0's write to reach the server and client 1", func() bool {
		v := get(t, clients[1], ref(t, clients[1], HeadRef), rec(5))
		return converged() && v != nil && *v == "from client 0"
	})

	// Restart the server on the same address: the followers reconnect.
	addr := ts.addr
	stopServer()
	put(t, st, 200, 210, 1) // changed while no server runs
	srv, err := NewServer(st, ServerOptions{Tokens: testTokens, CertDir: filepath.Join(dir, "cert")})
	if err != nil {
		t.Fatal(err)
	}
	// The old listener's socket may take a moment to go.
	eventually(t, "the address to be free again", func() bool { return srv.Listen(addr) == nil })
	sctx, scancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	defer func() { scancel(); <-served }()
	edit(t, clients[1], tree.Edit{Key: rec(7), Delete: true})
	eventually(t, "convergence after the restart", func() bool {
		return converged() && get(t, ts.store, ref(t, ts.store, HeadRef), rec(7)) == nil
	})

	cancel()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Follow %d: %v", i, err)
		}
	}
	for _, c := range clients {
		checkConverged(t, ts, c)
	}
	t.Logf("syncs per follower: %v", syncs)
}

// TestFollowStopsOnBadToken: an error no retry fixes ends Follow.
func TestFollowStopsOnBadToken(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	c := openStore(t, t.TempDir(), smallChunks)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Follow(ctx, c, ts.opts("no-such-token"), FollowOptions{})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Follow with a bad token: %v, want ErrUnauthorized", err)
	}
}

func TestWatchFrameDecoding(t *testing.T) {
	for _, tc := range []struct {
		ms   uint64
		want time.Duration
	}{{0, minHeartbeat}, {50, minHeartbeat}, {1500, 1500 * time.Millisecond}, {1 << 62, maxHeartbeat}} {
		got, _, has, err := decodeWatch(encodeWatch(time.Duration(tc.ms)*time.Millisecond, scope.Scope{}))
		if tc.ms == 1<<62 {
			got, _, has, err = decodeWatch(append([]byte(nil), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0))
		}
		if err != nil || got != tc.want || has {
			t.Errorf("heartbeat %d ms decodes to %v (scope %v), %v; want %v", tc.ms, got, has, err, tc.want)
		}
	}
	for _, sc := range []scope.Scope{scope.Prefixes([]byte("a/")), scope.Prefixes([]byte("a/"), []byte("m/")), scope.All} {
		hb, got, has, err := decodeWatch(encodeWatch(2*time.Second, sc))
		named := !sc.IsAll() // All is the token's scope: not named
		if err != nil || hb != 2*time.Second || has != named || (named && !got.Equal(sc)) {
			t.Errorf("scope %v decodes to %v (named %v), heartbeat %v, %v", sc, got, has, hb, err)
		}
	}
	if _, _, _, err := decodeWatch([]byte{1, 2}); !errors.Is(err, ErrProtocol) {
		t.Errorf("a malformed scope: %v, want ErrProtocol", err)
	}
	if _, err := decodeRoot(node.XXH3, make([]byte, 15)); !errors.Is(err, ErrProtocol) {
		t.Errorf("short root: %v, want ErrProtocol", err)
	}
}

// TestWatchPartialReadScope: a watcher whose token reads only part of the
// keys hears of moves that change records it can read, and of no others.
func TestWatchPartialReadScope(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.Tokens = append(o.Tokens, Token{Token: "tok-carol-0123456789", ClientID: "carol", Read: pfx("key-0001")})
	})
	put(t, ts.store, 0, 300, 1)
	opts := ts.opts(alice)
	opts.Token = "tok-carol-0123456789"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan node.Hash, 16)
	go Watch(ctx, opts, func(r node.Hash) error { reports <- r; return nil })
	next := func(within time.Duration) (node.Hash, bool) {
		select {
		case r := <-reports:
			return r, true
		case <-time.After(within):
			return node.Hash{}, false
		}
	}
	if r, ok := next(10 * time.Second); !ok || r != ref(t, ts.store, HeadRef) {
		t.Fatalf("initial report %s, %v", r.Short(), ok)
	}
	put(t, ts.store, 200, 250, 2) // key-000200..key-000249: outside key-0001*
	edit(t, ts.store, tree.Edit{Key: rec(5), Delete: true})
	if r, ok := next(500 * time.Millisecond); ok {
		t.Fatalf("a move outside the read scope was reported: %s", r.Short())
	}
	want := edit(t, ts.store, tree.Edit{Key: rec(150), Value: []byte("in scope")}) // key-000150
	if r, ok := next(10 * time.Second); !ok || r != want {
		t.Fatalf("a move in the read scope: reported %s (%v), want %s", r.Short(), ok, want.Short())
	}
}

// TestFollowServerReturnsToEarlierRoot: roots are content addressed, so a
// server may move back to a root it announced before (a follower pushes a
// change, another writer undoes it); the follower must still sync to it.
func TestFollowServerReturnsToEarlierRoot(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	a := put(t, ts.store, 0, 100, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ts.opts(alice)
	opts.IOTimeout = 600 * time.Millisecond // heartbeats every 200 ms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, c, opts, FollowOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}()
	at := func(h node.Hash) func() bool {
		return func() bool { b, _, _ := c.Ref(BaseRef); return b == h }
	}
	eventually(t, "the clone", at(a))
	for round := range 5 {
		// Our change reaches the server...
		edit(t, c, tree.Edit{Key: rec(7), Value: []byte(fmt.Sprint("ours ", round))})
		eventually(t, "our push", func() bool {
			v := get(t, ts.store, ref(t, ts.store, HeadRef), rec(7))
			return v != nil && *v == fmt.Sprint("ours ", round) && at(ref(t, ts.store, HeadRef))()
		})
		// ...and another writer restores the old value: root a again.
		if back := edit(t, ts.store, tree.Edit{Key: rec(7), Value: val(7, 1)}); back != a {
			t.Fatalf("restoring the value gave root %s, want %s", back.Short(), a.Short())
		}
		eventually(t, "the follower back at the earlier root", at(a))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
