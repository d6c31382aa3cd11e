package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
)

// storeRemote serves another store's nodes and blobs as a Remote: the unit
// test stand-in for a cluster's object storage.
type storeRemote struct {
	src     *Store
	fetched atomic.Int64
	corrupt bool // flip a byte of every answer
}

func (r *storeRemote) Fetch(ctx context.Context, blobs bool, hs []node.Hash) ([][]byte, error) {
	out := make([][]byte, len(hs))
	for i, h := range hs {
		var raw []byte
		if blobs {
			b, err := r.src.Blob(ctx, h)
			if errors.Is(err, node.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			raw = b
		} else {
			n, err := r.src.Node(ctx, h)
			if errors.Is(err, node.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			raw = bytes.Clone(n.Raw())
		}
		if r.corrupt {
			raw[len(raw)-1] ^= 1
		}
		out[i] = raw
		r.fetched.Add(1)
	}
	return out, nil
}

func (r *storeRemote) Has(ctx context.Context, blobs bool, hs []node.Hash) ([]bool, error) {
	if blobs {
		out := make([]bool, len(hs))
		for i, h := range hs {
			ok, err := r.src.HasBlob(h)
			if err != nil {
				return nil, err
			}
			out[i] = ok
		}
		return out, nil
	}
	return r.src.HasNodes(hs)
}

// TestRemoteReadThrough: a store with a Remote reads, counts, verifies and
// edits a tree it holds none of, fetching each node once, and its edits give
// the root the source store gives.
func TestRemoteReadThrough(t *testing.T) {
	ctx := context.Background()
	src := openTest(t, smallConfig)
	model := map[string]string{}
	for i := range 2000 {
		model[fmt.Sprintf("k%05d", i)] = fmt.Sprintf("v%d", i)
	}
	model["big"] = strings.Repeat("large value ", 2000) // out of line: blobs
	root := build(t, src, model)

	rem := &storeRemote{src: src}
	s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true, Remote: rem})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.HasNode(root); err != nil || !ok {
		t.Fatalf("HasNode(root) through the remote = %v, %v", ok, err)
	}
	if n, err := s.Count(ctx, root); err != nil || n != uint64(len(model)) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(model))
	}
	for k, v := range model {
		got, err := s.Get(ctx, root, []byte(k))
		if err != nil || string(got) != v {
			t.Fatalf("Get(%q) = %.20q, %v", k, got, err)
		}
	}
	if _, err := s.Verify(ctx, root); err != nil {
		t.Fatalf("Verify through the remote: %v", err)
	}
	before := rem.fetched.Load()
	if _, err := s.Verify(ctx, root); err != nil {
		t.Fatal(err)
	}
	if again := rem.fetched.Load() - before; again != 0 {
		t.Fatalf("a second Verify fetched %d entries: fetched entries are not kept", again)
	}
	edits := []Edit{{Key: []byte("k00007"), Value: []byte("new")}, {Key: []byte("k01999")}, {Key: []byte("zz"), Value: []byte("z")}}
	got := apply(t, s, root, edits)
	want := apply(t, src, root, edits)
	if got != want {
		t.Fatalf("edit through the remote gave root %s, the source %s", got, want)
	}
	absent := node.XXH3.Sum([]byte("no such node"))
	if _, err := s.Node(ctx, absent); !errors.Is(err, node.ErrNotFound) {
		t.Fatalf("Node(absent) = %v; want ErrNotFound", err)
	}
}

// TestRemoteCorruptRefused: bytes from the remote that do not hash to the
// address asked for are an error, and are not kept.
func TestRemoteCorruptRefused(t *testing.T) {
	ctx := context.Background()
	src := openTest(t, smallConfig)
	root := build(t, src, map[string]string{"a": "1", "b": "2"})
	rem := &storeRemote{src: src, corrupt: true}
	s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true, Remote: rem})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, root, []byte("a")); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("Get through a corrupting remote = %v; want ErrCorrupt", err)
	}
	rem.corrupt = false
	if v, err := s.Get(ctx, root, []byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("after the remote recovers, Get = %q, %v", v, err)
	}
}

// TestRemoteOpenFailureLeavesNoGoroutine: an Open with a Remote that fails
// (here on a chunker mismatch) starts no cache writer it would leak.
func TestRemoteOpenFailureLeavesNoGoroutine(t *testing.T) {
	dir := t.TempDir()
	src := openTest(t, smallConfig)
	s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	before := runtime.NumGoroutine()
	other := smallConfig
	other.LeafFanout++
	for range 5 {
		if _, err := Open(dir, &Options{Chunker: other, NoSync: true, Remote: &storeRemote{src: src}}); !errors.Is(err, ErrConfigMismatch) {
			t.Fatalf("Open with another chunker: %v, want ErrConfigMismatch", err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("%d goroutines before, %d after 5 failed Opens", before, after)
	}
}

// TestRemoteAddressCheck: a store reading through a remote (a cluster
// server's cache) refuses to write bytes under an address the remote holds
// with other bytes, though its own cache lacks that address (a real xxh3
// collision), and keeps nothing of the refused value.
func TestRemoteAddressCheck(t *testing.T) {
	ctx := context.Background()
	a, b := xxh3Collision(2048, bytes.Repeat([]byte("rest of the value "), 200))
	src := openTest(t, smallConfig)
	sb, err := src.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.StoreValue(a); err != nil {
		t.Fatal(err)
	}
	if err := sb.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true, Remote: &storeRemote{src: src}, CheckAddresses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bt, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Discard()
	_, err = bt.StoreValue(b)
	if err == nil {
		err = bt.Commit(ctx)
	}
	if !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("storing a value colliding with the remote's: %v, want ErrAddressConflict", err)
	}
	h := node.XXH3.Sum(a)
	if got, err := s.Blob(ctx, h); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("blob %s after the refused write: %v (equal to the remote's: %v)", h, err, bytes.Equal(got, a))
	}
}
