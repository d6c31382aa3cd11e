package net

import (
	"context"
	"testing"

	"github.com/arbor-sync/arbor/tree"
)

// TestSessionResumption: a second sync of a store resumes the TLS session
// its first one was given (kept in the store, so across processes too),
// sends fewer bytes for it, and still checks the pin; a new pin never
// resumes an old session.
func TestSessionResumption(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 50, 1)
	dir := t.TempDir()
	c := openStore(t, dir, smallChunks)
	first := mustSync(t, c, ts.opts(alice))
	if first.Resumed {
		t.Fatal("the first sync resumed a session")
	}
	c.Close()
	c = openStore(t, dir, smallChunks) // as the next process would
	second := mustSync(t, c, ts.opts(alice))
	if !second.Resumed {
		t.Fatal("the second sync did not resume the session the first was given")
	}
	if second.Path != "none" {
		t.Fatalf("path %s", second.Path)
	}
	edit(t, ts.store, tree.Edit{Key: rec(3), Value: []byte("x")})
	third := mustSync(t, c, ts.opts(alice))
	if !third.Resumed || third.Pulled != 1 {
		t.Fatalf("resumed %v, pulled %d", third.Resumed, third.Pulled)
	}
	// A wrong pin: refused even though a session is stored.
	opts := ts.opts(alice)
	opts.Fingerprint = "00" + ts.fp[2:]
	if _, err := Sync(context.Background(), c, opts); err == nil {
		t.Fatal("a wrong pin was accepted through a resumed session")
	}
}
