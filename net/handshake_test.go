package net

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

func TestRootAudit(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	want := put(t, ts.store, 0, 50, 1)
	got, err := Root(context.Background(), ts.opts("tok-alice-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Root = %s, want %s", got, want)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	other := startServer(t, smallChunks, nil)
	tests := []struct {
		name string
		opts ClientOptions
		want error
	}{
		{"unknown token", ClientOptions{Server: ts.addr, Token: "nope", Fingerprint: ts.fp}, ErrUnauthorized},
		{"missing token", ClientOptions{Server: ts.addr, Fingerprint: ts.fp}, ErrUnauthorized},
		{"wrong pin", ClientOptions{Server: ts.addr, Token: "tok-alice-0123456789", Fingerprint: other.fp}, ErrFingerprint},
		{"no pin and no trust flag", ClientOptions{Server: ts.addr, Token: "tok-alice-0123456789"}, ErrFingerprint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Root(context.Background(), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Root err = %v, want %v", err, tt.want)
			}
			_, err = Sync(context.Background(), openStore(t, t.TempDir(), smallChunks), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Sync err = %v, want %v", err, tt.want)
			}
		})
	}
	// The server keeps serving after the refusals.
	if _, err := Root(context.Background(), ts.opts("tok-alice-0123456789")); err != nil {
		t.Fatal(err)
	}
}

func TestTrustOnFirstUseThenPinned(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 10, 1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ClientOptions{Server: ts.addr, Token: "tok-bob-0123456789", TrustOnFirstUse: true}
	res := mustSync(t, c, opts)
	if res.ClientID != "bob" {
		t.Fatalf("client id %q", res.ClientID)
	}
	// Later syncs use the stored pin without the trust flag.
	opts.TrustOnFirstUse = false
	mustSync(t, c, opts)
	// A different server at another address fails the stored pin.
	other := startServer(t, smallChunks, nil)
	opts.Server = other.addr
	if _, err := Sync(context.Background(), c, opts); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("err = %v, want ErrFingerprint", err)
	}
}

func TestCAFile(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	ca := filepath.Join(ts.dir, "cert", CertFile)
	opts := ClientOptions{Server: ts.addr, Token: "tok-alice-0123456789", CAFile: ca}
	if _, err := Root(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	other := startServer(t, smallChunks, nil)
	opts.CAFile = filepath.Join(other.dir, "cert", CertFile)
	if _, err := Root(context.Background(), opts); err == nil {
		t.Fatal("foreign CA accepted")
	}
}

func TestCertificatePersists(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	srv2, err := NewServer(ts.store, ServerOptions{CertDir: filepath.Join(ts.dir, "cert")})
	if err != nil {
		t.Fatal(err)
	}
	if srv2.Fingerprint() != ts.fp {
		t.Fatal("fingerprint changed across restarts")
	}
	if fi, err := os.Stat(filepath.Join(ts.dir, "cert", KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
}

// TestConfigMismatch: a store that holds records of other node sizes
// cannot sync (its roots could never be compared); an empty store takes
// the server's on its first sync.
func TestConfigMismatch(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 50, 1)
	c := openStore(t, t.TempDir(), smallChunks2)
	edit(t, c, tree.Edit{Key: []byte("local"), Value: []byte("v")})
	_, err := Sync(context.Background(), c, ts.opts("tok-alice-0123456789"))
	if !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("err = %v", err)
	}
	if c.Config() != smallChunks2.WithDefaults() {
		t.Fatalf("a store with data changed its config to %+v", c.Config())
	}

	fresh := openStore(t, t.TempDir(), smallChunks2)
	mustSync(t, fresh, ts.opts("tok-alice-0123456789"))
	if fresh.Config() != smallChunks.WithDefaults() || ref(t, fresh, HeadRef) != ref(t, ts.store, HeadRef) {
		t.Fatalf("fresh store: config %+v, head %s, server %s", fresh.Config(), ref(t, fresh, HeadRef), ref(t, ts.store, HeadRef))
	}
}

func TestEmptyServerEmptyClient(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	c := openStore(t, t.TempDir(), smallChunks)
	res := mustSync(t, c, ts.opts("tok-alice-0123456789"))
	if res.ServerRoot != node.EmptyRoot(node.XXH3) || ref(t, c, BaseRef) != node.EmptyRoot(node.XXH3) {
		t.Fatalf("res %+v", res)
	}
	res = mustSync(t, c, ts.opts("tok-alice-0123456789"))
	if res.RoundTrips != 1 || res.Path != "none" {
		t.Fatalf("second sync: %d round trips, path %q", res.RoundTrips, res.Path)
	}
}
