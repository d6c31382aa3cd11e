package net

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

func TestServerStats(t *testing.T) {
	var commits atomic.Int64 // OnCommit runs on the server's goroutines
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.OnCommit = func(took time.Duration, accepted, overridden, rejected int) { commits.Add(1) }
	})
	put(t, ts.store, 0, 100, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	edit(t, c, tree.Edit{Key: rec(1), Value: []byte("mine")}, tree.Edit{Key: rec(2), Value: []byte("mine")})
	edit(t, ts.store, tree.Edit{Key: rec(2), Value: []byte("server's")})
	mustSync(t, c, ts.opts(alice))
	Root(context.Background(), ts.opts("no-such-token-0123456789"))
	eventually(t, "sessions to end", func() bool { return ts.srv.Stats().Sessions == 0 })
	st := ts.srv.Stats()
	if st.SessionsStarted != 2 || st.Refused["unauthorized"] != 1 || st.Pushes != 1 ||
		st.ChangesAccepted != 1 || st.ChangesOverridden != 1 || commits.Load() != 1 || st.BytesSent == 0 || st.BytesReceived == 0 ||
		st.Syncs["tree"]+st.Syncs["walk"] == 0 || st.RetainedRoots == 0 {
		t.Fatalf("stats %+v, commits %d", st, commits.Load())
	}
}

// TestDrain: Drain stops new connections at once and returns when the
// sessions end or its context does.
func TestDrain(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	if !ts.srv.Ready() {
		t.Fatal("a listening server is not ready")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watching := make(chan struct{})
	go Watch(ctx, ts.opts(alice), func(node.Hash) error {
		select {
		case <-watching:
		default:
			close(watching)
		}
		return nil
	})
	<-watching
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	start := time.Now()
	ts.srv.Drain(dctx) // the Watch session does not end by itself
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("Drain returned after %v with a session open", took)
	}
	if ts.srv.Ready() {
		t.Fatal("a draining server is ready")
	}
	start = time.Now()
	if _, err := Root(context.Background(), ClientOptions{Server: ts.addr, Token: alice, Fingerprint: ts.fp}); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("a draining server answered a new connection with %v, want a refusal", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the refusal took %v", took)
	}
	cancel() // the watcher goes away: a second Drain returns at once
	eventually(t, "the watch session to end", func() bool { return ts.srv.Stats().Sessions == 0 })
	start = time.Now()
	ts.srv.Drain(context.Background())
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Drain with no session took %v", took)
	}
}
