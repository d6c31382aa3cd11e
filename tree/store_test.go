package tree

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// TestNodeUnderWrongKey: a stored node whose bytes hash to another address
// (written under the wrong key) reads as ErrCorrupt, never as that node.
func TestNodeUnderWrongKey(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r1 := apply(t, s, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("a"), Value: []byte("1")}})
	r2 := apply(t, s, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("b"), Value: []byte("2")}})
	n1, err := s.Node(context.Background(), r1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(nodeKey(r2), n1.Raw(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir, &Options{NoSync: true}); err != nil { // a cold node cache
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Node(context.Background(), r2); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("node %s holding another node's bytes: error %v, want ErrCorrupt", r2, err)
	}
	if _, err := s.Node(context.Background(), r1); err != nil {
		t.Fatalf("the intact node: %v", err)
	}
}

// TestOpenAfterCrashDuringCreate: a crash (kill -9) while a store was
// created, after the marker's temporary file was written and before it
// was renamed into place, leaves the directory holding only that file
// (and the lock file). It opens as a new store.
func TestOpenAfterCrashDuringCreate(t *testing.T) {
	for _, leftovers := range [][]string{{markerTemp}, {lockFile, markerTemp}} {
		t.Run(strings.Join(leftovers, "+"), func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range leftovers {
				if err := os.WriteFile(filepath.Join(dir, name), []byte("arbor st"), 0o644); err != nil { // cut short
					t.Fatal(err)
				}
			}
			if _, err := Open(dir, &Options{MustExist: true}); !errors.Is(err, ErrNotStore) {
				t.Fatalf("MustExist: %v, want ErrNotStore", err)
			}
			s, err := Open(dir, &Options{NoSync: true})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			r := apply(t, s, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("k"), Value: []byte("v")}})
			b, err := s.NewBatch()
			if err != nil {
				t.Fatal(err)
			}
			b.SetRef("head", r)
			if err := b.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, markerTemp)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s left behind: %v", markerTemp, err)
			}
			if v, err := readMarker(dir); err != nil || v != 3 {
				t.Fatalf("marker: format %d, %v", v, err)
			}
			s, err = Open(dir, &Options{MustExist: true, NoSync: true})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s.Close()
			if got, err := s.Root("head"); err != nil || got != r {
				t.Fatalf("head after reopen: %s, %v; want %s", got, err, r)
			}
		})
	}
	// Anything else beside them is still not a store.
	dir := t.TempDir()
	for _, name := range []string{markerTemp, "other"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir, nil); !errors.Is(err, ErrNotStore) {
		t.Fatalf("a directory with %s and another file: %v, want ErrNotStore", markerTemp, err)
	}
	if _, err := os.Stat(filepath.Join(dir, lockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a lock file was written into a directory that is not a store: %v", err)
	}
}

// xxHash reads an xxh3 address from stored bytes (a key or value suffix).
func xxHash(b []byte) node.Hash {
	h, ok := node.XXH3.HashOf(b)
	if !ok {
		panic(fmt.Sprintf("xxHash: %d bytes", len(b)))
	}
	return h
}

// TestStoreHashIsFixedAtCreation: a store keeps the hash it was created
// with, refuses options that ask for another, and a store that predates the
// choice (no hash in its metadata) is xxh3.
func TestStoreHashIsFixedAtCreation(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Hash: node.BLAKE3, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.NewBatch()
	root, err := b.Apply(context.Background(), s.EmptyRoot(), []Edit{{Key: []byte("k"), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	b.SetRef("head", root)
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if root.Alg() != node.BLAKE3 || len(root.String()) != 64 {
		t.Fatalf("root %s of a blake3 store", root)
	}
	s.Close()
	// An arbor that knows only xxh3 reads up to format 3: it refuses this
	// store instead of calling its nodes corrupt.
	if v, err := readMarker(dir); err != nil || v != 4 {
		t.Fatalf("blake3 store marker: format %d, %v", v, err)
	}

	if _, err := Open(dir, &Options{Hash: node.XXH3}); !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("reopening a blake3 store as xxh3: %v, want ErrConfigMismatch", err)
	}
	if _, err := Open(t.TempDir(), &Options{Hash: 9}); err == nil {
		t.Fatalf("unknown hash algorithm accepted")
	}
	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Root("head"); err != nil || got != root || s.Hash() != node.BLAKE3 {
		t.Fatalf("reopened: root %s (%v), hash %s", got, err, s.Hash())
	}
	s.Close()

	legacy := t.TempDir()
	s, err = Open(legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Delete(metaKey(metaHash), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(legacy, &Options{Hash: node.XXH3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Hash() != node.XXH3 || s.EmptyRoot() != node.EmptyRoot(node.XXH3) {
		t.Fatalf("a store without a recorded hash opened as %s", s.Hash())
	}
}

// TestReinitEmptyStoreOnly: an empty store takes another hash and node
// sizes (its marker then names format 4); one holding a ref or pending
// writes refuses.
func TestReinitEmptyStoreOnly(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reinit(smallConfig, node.BLAKE3); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != node.BLAKE3 || s.Config() != smallConfig.WithDefaults() {
		t.Fatalf("after Reinit: %s %+v", s.Hash(), s.Config())
	}
	if v, _ := readMarker(dir); v != 4 {
		t.Fatalf("marker %d after Reinit to blake3", v)
	}
	if _, err := s.Update(context.Background(), "head", []Edit{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reinit(smallConfig, node.XXH3); !errors.Is(err, ErrConfigMismatch) {
		t.Fatalf("Reinit of a store with data: %v", err)
	}
	s.Close()
	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Hash() != node.BLAKE3 || s.Config() != smallConfig.WithDefaults() {
		t.Fatalf("reopened: %s %+v", s.Hash(), s.Config())
	}
}
