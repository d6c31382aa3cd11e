package arbor_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
)

// Red-team tests of the per-store hash (arbor.Options.Hash) through the DB
// API. Each asserts the secure/correct behaviour. A test that names an "Attack" and an "Effect"
// describes the defect it found; every one is fixed and the test guards
// the fix.

// rtHashServer serves a new DB of hash alg holding a few records, with a
// token that may read and write only "a/".
func rtHashServer(t *testing.T, alg arbor.HashAlg) arbor.SyncOptions {
	t.Helper()
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	tmp := t.TempDir()
	sdb, err := arbor.Open(tmp+"/server", &arbor.Options{NoSync: true, Hash: alg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	if err := sdb.Apply(context.Background(), new(arbor.Batch).Put([]byte("a/1"), []byte("x")).Put([]byte("b/1"), []byte("y"))); err != nil {
		t.Fatal(err)
	}
	srv, err := arbor.NewServer(sdb, arbor.ServerOptions{CertDir: tmp + "/tls", Tokens: []arbor.Token{
		{Token: "rt-hash-all-0123456789", ClientID: "all"},
		{Token: "rt-hash-a-0123456789", ClientID: "a", Read: scope.Prefixes([]byte("a/")), Write: scope.Prefixes([]byte("a/"))},
	}})
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
	return arbor.SyncOptions{Server: srv.Addr().String(), Token: "rt-hash-all-0123456789", Fingerprint: srv.Fingerprint()}
}

// TestRedTeamHashPutDuringFirstSync
//
// Promise (DB.Sync): "Writes made while Sync runs stay local changes for
// the next sync." Attack (a careless user): Put a 70 KB value (over the
// working set's 64 KiB, so applied to the tree at once) into a new, empty
// DB while its first Sync, against a blake3 server, runs; the sync fails
// after its handshake (here: a scope the token may not read). The sync
// has already Reinit the store to blake3 under the Put's open batch,
// whose xxh3 chunks and index it cannot see. Effect: the Put succeeds,
// and the DB's head is a blake3 leaf around a 16-byte xxh3 reference: Get
// returns nothing (or an error) and Verify fails.
func TestRedTeamHashPutDuringFirstSync(t *testing.T) {
	bg := context.Background()
	opts := rtHashServer(t, arbor.BLAKE3)
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Count(bg); err != nil { // an ordinary read of the new DB
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 7000)
	var syncErr error
	ctx := &hookCtx{Context: bg, hook: func() {
		o := opts
		o.Token = "rt-hash-a-0123456789"
		o.Scope = scope.Prefixes([]byte("z/"))
		_, syncErr = db.Sync(bg, o)
	}}
	err = db.Put(ctx, []byte("k"), big)
	t.Logf("sync: %v; DB hash now %s; Put: %v", syncErr, db.Hash(), err)
	if err != nil {
		return // refused cleanly
	}
	got, err := db.Get(bg, []byte("k"))
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("acknowledged Put lost: Get = %d bytes, %v (want %d)", len(got), err, len(big))
	}
	if _, err := db.Verify(bg); err != nil {
		t.Errorf("DB does not verify: %v", err)
	}
}

// TestRedTeamHashDiffAcrossHashes: stores of different hashes cannot be
// compared (DiffWith, arbor diff --against), and roots of another hash or
// the zero Hash given to Diff (arbor diff FROM TO) are refused without a
// panic. Held.
func TestRedTeamHashDiffAcrossHashes(t *testing.T) {
	ctx := context.Background()
	x, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	b, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true, Hash: arbor.BLAKE3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, db := range []*arbor.DB{x, b} {
		if err := db.Put(ctx, []byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, pair := range [][2]*arbor.DB{{x, b}, {b, x}} {
		n := 0
		for _, err := range pair[0].DiffWith(ctx, pair[1], arbor.DiffOptions{}) {
			n++
			if !errors.Is(err, arbor.ErrConfigMismatch) {
				t.Fatalf("DiffWith %s vs %s: %v, want ErrConfigMismatch", pair[0].Hash(), pair[1].Hash(), err)
			}
		}
		if n == 0 {
			t.Fatal("DiffWith across hashes yielded nothing")
		}
	}
	xr, _ := x.Root(ctx)
	br, _ := b.Root(ctx)
	for _, c := range []struct {
		db       *arbor.DB
		from, to arbor.Hash
	}{
		{x, br, xr}, {b, xr, br}, {b, arbor.EmptyRoot(arbor.XXH3), br}, {x, arbor.EmptyRoot(arbor.BLAKE3), xr},
		{b, arbor.Hash{}, br}, {x, xr, arbor.Hash{}},
	} {
		got := 0
		var last error
		for _, err := range c.db.Diff(ctx, c.from, c.to, arbor.DiffOptions{}) {
			got++
			last = err
		}
		if last == nil {
			t.Errorf("Diff(%s, %s) in a %s store: %d changes, no error", c.from, c.to, c.db.Hash(), got)
		}
	}
	// A hash parsed from its hex is of the width's algorithm.
	for _, h := range []arbor.Hash{xr, br} {
		p, err := arbor.ParseHash(h.String())
		if err != nil || p != h {
			t.Errorf("ParseHash(%s) = %s, %v", h, p, err)
		}
	}
}
