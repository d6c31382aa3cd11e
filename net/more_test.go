package net

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// TestRetentionWindow: a base the server still retains takes the changes
// path; once Retain newer roots were published it falls back to a walk.
func TestRetentionWindow(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Retain = 3 })
	put(t, ts.store, 0, 100, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	publish := func(i int) {
		edit(t, ts.store, tree.Edit{Key: rec(i), Value: []byte(fmt.Sprint("new", i))})
		if _, err := Root(context.Background(), ts.opts(bob)); err != nil { // publishes the head
			t.Fatal(err)
		}
	}
	publish(1)
	publish(2)
	if res := mustSync(t, c, ts.opts(alice)); res.Path != "retained" {
		t.Fatalf("within the window: path %q", res.Path)
	}
	for i := range 4 {
		publish(10 + i)
	}
	res := mustSync(t, c, ts.opts(alice))
	if res.Path != "walk" || res.Pulled != 4 {
		t.Fatalf("past the window: path %q pulled %d", res.Path, res.Pulled)
	}
	checkConverged(t, ts, c)
	refs, _ := ts.store.Refs()
	n := 0
	for name := range refs {
		if len(name) > len(retainPrefix) && name[:len(retainPrefix)] == retainPrefix {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d retention refs, want 3", n)
	}
}

// TestServerGC: garbage collection through the server keeps every
// retained root, so clients keep the changes path, and frees the rest.
func TestServerGC(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.Retain = 2 })
	put(t, ts.store, 0, 300, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	for v := 2; v < 6; v++ {
		put(t, ts.store, 0, 300, v) // unpublished intermediate roots: garbage
	}
	if _, err := Root(context.Background(), ts.opts(bob)); err != nil {
		t.Fatal(err)
	}
	st, err := ts.srv.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.DeletedNodes == 0 {
		t.Fatalf("GC freed nothing: %+v", st)
	}
	res := mustSync(t, c, ts.opts(alice))
	if res.Path != "retained" || res.Pulled != 300 {
		t.Fatalf("after GC: path %q pulled %d", res.Path, res.Pulled)
	}
	checkConverged(t, ts, c)
}

// TestInterruptPushAndPull: a sync cancelled in the middle of its push, or
// of a retained-path pull, leaves the client at its old state; the next
// sync completes.
func TestInterruptPushAndPull(t *testing.T) {
	for _, phase := range []string{"push", "pull"} {
		t.Run(phase, func(t *testing.T) {
			ts := startServer(t, smallChunks, nil)
			put(t, ts.store, 0, 100, 1)
			c := openStore(t, t.TempDir(), smallChunks)
			mustSync(t, c, ts.opts(alice))
			if phase == "push" {
				put(t, c, 1000, 10000, 2)
			} else {
				put(t, ts.store, 1000, 10000, 3)
			}
			base, head := ref(t, c, BaseRef), ref(t, c, HeadRef)
			ctx, cancel := context.WithCancel(context.Background())
			opts := ts.opts(alice)
			calls := 0
			opts.Progress = func(p Progress) {
				if p.Phase == phase {
					if calls++; calls == 2 { // mid-stream: after 4096 records
						cancel()
					}
				}
			}
			_, err := Sync(ctx, c, opts)
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v", err)
			}
			if ref(t, c, BaseRef) != base || ref(t, c, HeadRef) != head {
				t.Fatal("interrupted sync moved refs")
			}
			res := mustSync(t, c, ts.opts(alice))
			if len(res.Overridden) != 0 {
				t.Fatalf("retry overrode %d changes", len(res.Overridden))
			}
			checkConverged(t, ts, c)
			if n, _ := c.Count(context.Background(), ref(t, c, HeadRef)); n != 9100 {
				t.Fatalf("%d records", n)
			}
		})
	}
}

// TestRootMismatchRepairs: a client whose store was silently corrupted
// computes a wrong root on the changes path; Sync reports ErrRootMismatch
// and repairs the store with a walk.
func TestRootMismatchRepairs(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 200, 1)
	dir := t.TempDir()
	c := openStore(t, dir, smallChunks)
	mustSync(t, c, ts.opts(alice))
	base := ref(t, c, BaseRef)
	// Find the leaf holding rec(50) and rewrite it in place with another value
	// for rec(51): same hash key, different bytes.
	n, err := c.Node(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	var leafHash node.Hash = base
	for !n.IsLeaf() {
		leafHash, _ = n.Child(n.Search(rec(50)))
		if n, err = c.Node(context.Background(), leafHash); err != nil {
			t.Fatal(err)
		}
	}
	var ents []node.Entry
	for i := 0; i < n.Len(); i++ {
		e := n.Entry(i)
		if string(e.Key) != string(rec(50)) {
			e.Payload = node.InlineValue([]byte("rot")).AppendPayload(nil)
		}
		ents = append(ents, e)
	}
	c.Close()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(append([]byte{'n'}, leafHash.Bytes()...), node.Encode(node.XXH3, 0, ents), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c = openStore(t, dir, smallChunks)
	defer c.Close()

	edit(t, ts.store, tree.Edit{Key: rec(50), Value: []byte("server")})
	res, err := Sync(context.Background(), c, ts.opts(alice))
	if !errors.Is(err, ErrRootMismatch) {
		t.Fatalf("err = %v, want ErrRootMismatch", err)
	}
	if res == nil || res.Path != "walk" {
		t.Fatalf("result %+v", res)
	}
	checkConverged(t, ts, c)
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

// TestRetentionSurvivesRestart: retained roots are refs, so after a server
// restart a client's base still takes the changes path.
func TestRetentionSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir+"/data", smallChunks)
	defer st.Close()
	ts, stop := serveStore(t, st, dir, nil)
	put(t, st, 0, 300, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	mustSync(t, c, ts.opts(alice))
	stop()
	edit(t, st, tree.Edit{Key: rec(5), Value: []byte("after restart")})
	ts2, _ := serveStore(t, st, dir, nil)
	if ts2.fp != ts.fp {
		t.Fatal("certificate changed across restarts")
	}
	res := mustSync(t, c, ts2.opts(alice))
	if res.Path != "retained" || res.Pulled != 1 {
		t.Fatalf("after restart: path %q pulled %d", res.Path, res.Pulled)
	}
	checkConverged(t, ts2, c)
}
