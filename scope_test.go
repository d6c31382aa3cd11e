package arbor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
)

// TestPartialReplica: a DB synced with a scope holds the server's records
// in it, refuses writes outside it, pushes writes inside it, and verifies.
func TestPartialReplica(t *testing.T) {
	ctx := context.Background()
	serverDB, db, opts := syncPair(t, func(b *arbor.Batch) {
		for i := range 500 {
			b.Put([]byte(fmt.Sprintf("%c/%04d", 'a'+i%5, i)), []byte(fmt.Sprint(i)))
		}
	})
	opts.Scope = scope.Prefixes([]byte("b/"))
	res, err := db.Sync(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pulled != 100 {
		t.Fatalf("pulled %d, want 100", res.Pulled)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	err = db.Put(ctx, []byte("c/x"), []byte("no"))
	if !errors.Is(err, arbor.ErrOutOfScope) || !strings.Contains(err.Error(), `"c/x"`) {
		t.Fatalf("write outside scope: err = %v", err)
	}
	if err := db.Put(ctx, []byte("b/new"), []byte("yes")); err != nil {
		t.Fatal(err)
	}
	opts.Scope = scope.Scope{} // the stored scope
	if _, err := db.Sync(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if v, err := serverDB.Get(ctx, []byte("b/new")); err != nil || string(v) != "yes" {
		t.Fatalf("server b/new = %q, %v", v, err)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}

	// Reads see exactly the scope: the boundary leaves' neighbours stay hidden.
	if n, err := db.Count(ctx); err != nil || n != 101 {
		t.Fatalf("Count on the partial replica = %d, %v; want the 101 records in scope", n, err)
	}
	if _, err := db.Get(ctx, []byte("a/0000")); !errors.Is(err, arbor.ErrOutOfScope) {
		t.Fatalf("Get outside scope = %v, want ErrOutOfScope", err)
	}
	if v, err := db.Get(ctx, []byte("b/0001")); err != nil || string(v) != "1" {
		t.Fatalf("Get b/0001 = %q, %v", v, err)
	}
	it := db.NewIterator(ctx, arbor.Range{})
	seen := 0
	for it.Next() {
		if !strings.HasPrefix(string(it.Key()), "b/") {
			t.Fatalf("iterator over everything yields %q, outside the scope", it.Key())
		}
		seen++
	}
	if err := it.Close(); err != nil || seen != 101 {
		t.Fatalf("iterator yields %d records, %v; want 101", seen, err)
	}
}

// TestFollowPropagatesBothWays runs DB.Follow against an in-process server:
// a Put on either side reaches the other without any explicit Sync.
func TestFollowPropagatesBothWays(t *testing.T) {
	ctx := context.Background()
	serverDB, db, opts := syncPair(t, func(b *arbor.Batch) { b.Put([]byte("k0"), []byte("v0")) })
	followed := make(chan error, 1)
	fctx, stopFollow := context.WithCancel(ctx)
	go func() { followed <- db.Follow(fctx, opts, arbor.FollowOptions{}) }()

	has := func(d *arbor.DB, k, v string) func() bool {
		return func() bool {
			got, err := d.Get(ctx, []byte(k))
			return err == nil && string(got) == v
		}
	}
	waitFor(t, "the initial clone", has(db, "k0", "v0"))
	if err := serverDB.Put(ctx, []byte("k1"), []byte("from server")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a server write on the client", has(db, "k1", "from server"))
	if err := db.Put(ctx, []byte("k2"), []byte("from client")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a client write on the server", has(serverDB, "k2", "from client"))
	stopFollow()
	if err := <-followed; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	sr, err := serverDB.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cr, _ := db.Root(ctx); cr != sr {
		t.Fatalf("client root %s, server root %s", cr, sr)
	}
}

// waitFor polls cond until it holds (a liveness bound, not a speed target).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// syncPair opens a server DB filled by fill, serves it with token s3cret
// (client "laptop") on a loopback port, and opens an empty client DB; all
// of it ends with the test. opts reach the server.
func syncPair(t *testing.T, fill func(*arbor.Batch)) (serverDB, db *arbor.DB, opts arbor.SyncOptions) {
	t.Helper()
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	tmp := t.TempDir()
	serverDB, err := arbor.Open(tmp+"/server", &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serverDB.Close() })
	b := new(arbor.Batch)
	fill(b)
	if err := serverDB.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	srv, err := arbor.NewServer(serverDB, arbor.ServerOptions{Tokens: []arbor.Token{{Token: "s3cret", ClientID: "laptop"}}, CertDir: tmp + "/tls"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	if db, err = arbor.Open(tmp+"/client", &arbor.Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return serverDB, db, arbor.SyncOptions{Server: srv.Addr().String(), Token: "s3cret", Fingerprint: srv.Fingerprint()}
}

// TestFollowPartialReplicaIdles: a partial replica that follows a server
// syncs when something in its scope changes and not otherwise: not when
// idle (its head and base agree after a sync, so Follow does not loop),
// and not when the server changes records outside its scope.
func TestFollowPartialReplicaIdles(t *testing.T) {
	ctx := context.Background()
	serverDB, db, opts := syncPair(t, func(b *arbor.Batch) {
		for i := range 200 {
			b.Put([]byte(fmt.Sprintf("%c/%04d", 'a'+i%4, i)), []byte("v"))
		}
	})
	opts.Scope = scope.Prefixes([]byte("b/"))
	count, stop := startFollow(t, db, opts)
	// The data shows as soon as the sync commits; OnSync runs after.
	waitFor(t, "the partial clone", func() bool {
		v, err := db.Get(ctx, []byte("b/0001"))
		return err == nil && string(v) == "v" && count() > 0
	})
	before := count()
	time.Sleep(500 * time.Millisecond) // nothing changes: no sync may happen
	if n := count(); n != before {
		t.Fatalf("an idle partial follower synced %d times", n-before)
	}
	if err := serverDB.Put(ctx, []byte("b/0001"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change in scope", func() bool {
		v, err := db.Get(ctx, []byte("b/0001"))
		return err == nil && string(v) == "w" && count() > before
	})

	// Changes outside the scope are not announced to it: no sync.
	before = count()
	for i := range 5 {
		if err := serverDB.Put(ctx, []byte(fmt.Sprintf("a/%04d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := serverDB.Delete(ctx, []byte(fmt.Sprintf("c/%04d", 4*i+2))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := count(); n != before {
		t.Fatalf("changes outside the scope made the partial follower sync %d times", n-before)
	}
	// The next change in scope still arrives, on top of them.
	if err := serverDB.Put(ctx, []byte("b/0005"), []byte("z")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next change in scope", func() bool {
		v, err := db.Get(ctx, []byte("b/0005"))
		return err == nil && string(v) == "z" && count() > before
	})
	time.Sleep(200 * time.Millisecond) // room for an extra sync to show
	if n := count(); n != before+1 {
		t.Errorf("%d syncs for one change in scope", n-before)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFollowWatchesAWidenedScope: a follower that replicates its store's
// scope hears of changes in the part another sync added to that scope
// while it ran (its watch restarts with the new scope), and not only of
// changes in the scope it started with.
func TestFollowWatchesAWidenedScope(t *testing.T) {
	ctx := context.Background()
	serverDB, db, opts := syncPair(t, func(b *arbor.Batch) {
		for i := range 100 {
			b.Put([]byte(fmt.Sprintf("%c/%04d", 'a'+i%2, i)), []byte("v"))
		}
	})
	narrow := opts
	narrow.Scope = scope.Prefixes([]byte("b/"))
	if _, err := db.Sync(ctx, narrow); err != nil {
		t.Fatal(err)
	}
	count, stop := startFollow(t, db, opts) // follows the store's scope: opts names none
	waitFor(t, "the follower's first sync", func() bool { return count() > 0 })
	time.Sleep(300 * time.Millisecond) // let its watch start with scope b/

	wide := opts
	wide.Scope = scope.Prefixes([]byte("a/"), []byte("b/"))
	if _, err := db.Sync(ctx, wide); err != nil {
		t.Fatal(err)
	}
	if v, err := db.Get(ctx, []byte("a/0000")); err != nil || string(v) != "v" {
		t.Fatalf("widening sync: a/0000 = %q, %v", v, err)
	}
	time.Sleep(300 * time.Millisecond) // the follower notices the new scope
	if err := serverDB.Put(ctx, []byte("a/0000"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change in the added part of the scope", func() bool {
		v, err := db.Get(ctx, []byte("a/0000"))
		return err == nil && string(v) == "w"
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// startFollow runs db.Follow with opts until stop, which returns Follow's
// error; count reports how many syncs it has finished (each failed one
// also fails the test).
func startFollow(t *testing.T, db *arbor.DB, opts arbor.SyncOptions) (count func() int, stop func() error) {
	var mu sync.Mutex
	syncs := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- db.Follow(ctx, opts, arbor.FollowOptions{OnSync: func(_ *arbor.SyncResult, err error) {
			if err != nil {
				t.Errorf("sync: %v", err)
			}
			mu.Lock()
			syncs++
			mu.Unlock()
		}})
	}()
	count = func() int { mu.Lock(); defer mu.Unlock(); return syncs }
	stop = func() error { cancel(); return <-done }
	return count, stop
}
