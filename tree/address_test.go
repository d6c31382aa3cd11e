package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/arbor-sync/arbor/internal/xxh3collide"
	"path/filepath"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// Tests of Options.CheckAddresses. A real xxh3 collision is hard to craft
// in a test, so they store bytes X directly under the address of other
// bytes Y (as a collision would have left them) and then write Y.

func openChecked(t testing.TB, dir string, cfg chunker.Config) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Chunker: cfg, NoSync: true, CheckAddresses: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// plant stores val under key directly in Pebble.
func plant(t testing.TB, s *Store, key, val []byte) {
	t.Helper()
	if err := s.db.Set(key, val, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// mustStore asserts that key still holds want.
func mustStore(t testing.TB, s *Store, key, want []byte) {
	t.Helper()
	got, err := s.get(key)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("key %x holds %d bytes (%v), want the planted %d bytes unchanged", key, len(got), err, len(want))
	}
}

func leafOf(kvs ...string) *node.Node {
	var es []node.Entry
	for i := 0; i < len(kvs); i += 2 {
		es = append(es, node.Entry{Key: []byte(kvs[i]), Payload: node.InlineValue([]byte(kvs[i+1])).AppendPayload(nil)})
	}
	return node.Build(node.XXH3, 0, es)
}

func TestCheckAddressesBlobConflict(t *testing.T) {
	ctx := context.Background()
	s := openChecked(t, t.TempDir(), chunker.Config{})
	y := bytes.Repeat([]byte("y"), node.MaxInlineValue+100) // one chunk, stored as a blob
	if sizes := chunker.SplitValue(y); len(sizes) != 1 {
		t.Fatalf("value splits into %d chunks, want 1", len(sizes))
	}
	x := bytes.Repeat([]byte("x"), 700)
	addr := node.XXH3.Sum(y)
	plant(t, s, blobKey(addr), x)

	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	if _, err := b.PutBlob(y); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("PutBlob of bytes whose address holds others: %v, want ErrAddressConflict", err)
	}
	b.Discard()
	mustStore(t, s, blobKey(addr), x)

	// Apply of a value stored out of line through that blob.
	b, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	b.SetRef("head", node.EmptyRoot(node.XXH3))
	_, err = b.Apply(ctx, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("k"), Value: y}})
	if !errors.Is(err, ErrAddressConflict) || !bytes.Contains([]byte(err.Error()), []byte("blob "+addr.String())) {
		t.Fatalf("Apply of a value whose chunk's address holds other bytes: %v, want ErrAddressConflict naming blob %s", err, addr)
	}
	b.Discard()
	mustStore(t, s, blobKey(addr), x)
	if _, ok, err := s.Ref("head"); ok || err != nil {
		t.Fatalf("ref of the failed batch: set %v, %v", ok, err)
	}
}

func TestCheckAddressesNodeConflict(t *testing.T) {
	ctx := context.Background()
	s := openChecked(t, t.TempDir(), chunker.Config{})
	want := leafOf("a", "1")  // what Apply will build
	other := leafOf("b", "2") // what its address holds
	plant(t, s, nodeKey(want.Hash()), other.Raw())

	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	b.SetRef("head", want.Hash())
	if _, err := b.Apply(ctx, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("a"), Value: []byte("1")}}); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("Apply building a node whose address holds another: %v, want ErrAddressConflict", err)
	}
	// The batch holds the conflicting node: it must not commit.
	if err := b.Commit(ctx); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("Commit after the conflict: %v, want ErrAddressConflict", err)
	}
	for _, put := range []func(b *Batch) error{
		func(b *Batch) error { _, err := b.PutNode(want.Raw()); return err },
		func(b *Batch) error { _, err := b.PutDecoded(want); return err },
	} {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Discard()
		if err := put(b); !errors.Is(err, ErrAddressConflict) {
			t.Fatalf("PutNode/PutDecoded: %v, want ErrAddressConflict", err)
		}
		b.SetRef("head", want.Hash())
		if err := b.Commit(ctx); !errors.Is(err, ErrAddressConflict) {
			t.Fatalf("Commit after the conflict: %v, want ErrAddressConflict", err)
		}
	}
	mustStore(t, s, nodeKey(want.Hash()), other.Raw())
	if _, ok, _ := s.Ref("head"); ok {
		t.Fatal("the failed batch's ref was committed")
	}
	if got, _ := s.get(deltaKey(want.Hash())); got != nil {
		t.Fatal("the failed batch wrote a delta record")
	}
	if len(s.claims) != 0 {
		t.Fatalf("%d claims left after the batches ended", len(s.claims))
	}

	// A node the cache holds is compared without a probe.
	good := apply(t, s, node.EmptyRoot(node.XXH3), []Edit{{Key: []byte("c"), Value: []byte("3")}})
	if s.cache.get(good) == nil {
		t.Fatal("the committed node is not cached")
	}
	b, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	if write, err := b.claimNode(good, other.Raw(), b.ownClaims()); write || !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("claimNode of other bytes under a cached node's address: %v, %v; want ErrAddressConflict", write, err)
	}
	// A node pending in the batch, as a collision within it would leave it.
	d4 := leafOf("d", "4")
	if err := b.store(d4.Hash(), other.Raw(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutNode(d4.Raw()); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("PutNode of a node pending with other bytes: %v, want ErrAddressConflict", err)
	}
}

// TestCheckAddressesParallelApply: the conflict is found in the nodes a
// parallel Apply's workers write, and none of them replaces the planted
// bytes.
func TestCheckAddressesParallelApply(t *testing.T) {
	ctx := context.Background()
	model := map[string]string{}
	for i := range 4000 {
		model[fmt.Sprintf("k%06d", i)] = fmt.Sprintf("v%d", i)
	}
	var edits []Edit
	for i := 0; i < 4000; i += 6 { // 667 edits: the parallel leaf level
		edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%06d", i)), Value: []byte("new")})
	}
	if len(edits) < parallelMinEdits {
		t.Fatal("too few edits for a parallel Apply")
	}
	dir := t.TempDir()
	// The new leaves, found in a store without the check.
	ref := openTest(t, smallConfig)
	root := build(t, ref, model)
	r2 := apply(t, ref, root, edits)
	oldLeaves, newLeaves := leaves(t, ref, root), leaves(t, ref, r2)
	var fresh []node.Hash
	for h := range newLeaves {
		if !oldLeaves[h] {
			fresh = append(fresh, h)
		}
	}
	if len(fresh) < 10 {
		t.Fatalf("%d new leaves", len(fresh))
	}

	s := openChecked(t, filepath.Join(dir, "checked"), smallConfig)
	if got := build(t, s, model); got != root {
		t.Fatal("the same records built another tree")
	}
	other := leafOf("zz", "planted")
	for _, h := range []node.Hash{fresh[0], fresh[len(fresh)-1]} { // one in each half
		plant(t, s, nodeKey(h), other.Raw())
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	if _, err := b.Apply(ctx, root, edits); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("parallel Apply: %v, want ErrAddressConflict", err)
	}
	b.Discard()
	for _, h := range []node.Hash{fresh[0], fresh[len(fresh)-1]} {
		mustStore(t, s, nodeKey(h), other.Raw())
	}
	if len(s.claims) != 0 {
		t.Fatalf("%d claims left after the batch ended", len(s.claims))
	}

	// Without the planted bytes the same Apply succeeds.
	s2 := openChecked(t, filepath.Join(dir, "clean"), smallConfig)
	build(t, s2, model)
	if got := apply(t, s2, root, edits); got != r2 {
		t.Fatal("checked Apply built another tree")
	}
	if len(s2.claims) != 0 {
		t.Fatalf("%d claims left after commit", len(s2.claims))
	}
}

// leaves returns the leaf hashes of the tree at root.
func leaves(t testing.TB, s *Store, root node.Hash) map[node.Hash]bool {
	t.Helper()
	out := map[node.Hash]bool{}
	var walk func(h node.Hash)
	walk = func(h node.Hash) {
		n, err := s.Node(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		if n.Level() == 0 {
			out[h] = true
			return
		}
		for i := range n.Len() {
			c, _ := n.Child(i)
			walk(c)
		}
	}
	walk(root)
	return out
}

// TestCheckAddressesEqualBytes: writing what is already stored succeeds
// and leaves them as they are, whole nodes, nodes stored as deltas and blobs
// alike.
func TestCheckAddressesEqualBytes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openChecked(t, dir, chunker.Config{})
	model := map[string]string{}
	for i := range 2000 {
		model[fmt.Sprintf("k%06d", i)] = string(bytes.Repeat([]byte{byte(i)}, 100))
	}
	root := build(t, s, model)
	edit := []Edit{{Key: []byte("k000500"), Value: []byte("changed")}}
	r1 := apply(t, s, root, edit)
	// The changed leaf is stored as a delta only.
	var leaf node.Hash
	for h := range leaves(t, s, r1) {
		if raw, _ := s.get(deltaKey(h)); raw != nil {
			leaf = h
		}
	}
	if leaf.IsZero() {
		t.Fatal("the edit stored no delta")
	}
	if raw, _ := s.get(nodeKey(leaf)); raw != nil {
		t.Fatal("the delta-stored leaf is stored whole too")
	}
	big := bytes.Repeat([]byte("big value "), 300)
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	for range 2 { // the second time pending in the batch
		if _, err := b.PutBlob(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openChecked(t, dir, chunker.Config{}) // a cold node cache: every node is probed
	b, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	if got, err := b.Apply(ctx, root, edit); err != nil || got != r1 {
		t.Fatalf("the same edit: %v, %v; want root %s", got, err, r1)
	}
	// The deferred probe found the delta and compared the node it rebuilds.
	if err := s.verifyWrites(ctx, []written{{makeClaimKey(kindNode, leaf), leafOf("x", "y").Raw()}}, claimSet{}); !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("other bytes under a node stored as a delta: %v, want ErrAddressConflict", err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if raw, _ := s.get(nodeKey(leaf)); raw != nil {
		t.Fatal("a node stored as a delta was written again whole")
	}
	for range 2 {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Discard()
		if _, err := b.PutBlob(big); err != nil {
			t.Fatal(err)
		}
		raw := leafOf("k", "v").Raw()
		if _, err := b.PutNode(raw); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkContents(t, s, r1, func() map[string]string { model["k000500"] = "changed"; return model }())
}

// TestCheckAddressesClaims: two batches writing different bytes under one
// address, neither committed yet, cannot both succeed; equal bytes can.
func TestCheckAddressesClaims(t *testing.T) {
	ctx := context.Background()
	s := openChecked(t, t.TempDir(), chunker.Config{})
	h := node.XXH3.Sum([]byte("an address"))
	x, y := []byte("bytes x"), []byte("bytes y")
	b1, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Discard()
	b2, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Discard()
	c1, c2 := b1.ownClaims(), b2.ownClaims()
	step := func(b claimSet, raw []byte, wantWrite bool, wantErr error) {
		t.Helper()
		write, err := s.checkWrite(ctx, kindBlob, h, raw, b, b)
		if write != wantWrite || !errors.Is(err, wantErr) {
			t.Fatalf("checkWrite(%q) = %v, %v; want %v, %v", raw, write, err, wantWrite, wantErr)
		}
	}
	step(c1, x, true, nil)
	step(c2, y, false, ErrAddressConflict) // being written by b1
	step(c1, y, false, ErrAddressConflict) // written by this batch with other bytes
	step(c1, x, false, nil)                // written by this batch already
	step(c2, x, true, nil)                 // b1 may yet be discarded: b2 writes x too
	b1.Discard()
	step(c2, y, false, ErrAddressConflict)
	b2.Discard()
	if len(s.claims) != 0 {
		t.Fatalf("%d claims left", len(s.claims))
	}

	// Once committed, the bytes are found by the probe.
	b1, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Discard()
	if _, err := b1.PutBlob(x); err != nil {
		t.Fatal(err)
	}
	if err := b1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b2, err = s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Discard()
	if write, err := s.checkWrite(ctx, kindBlob, node.XXH3.Sum(x), y, b2.ownClaims(), b2.ownClaims()); write || !errors.Is(err, ErrAddressConflict) {
		t.Fatalf("checkWrite over committed bytes: %v, %v; want ErrAddressConflict", write, err)
	}
}

// TestUncheckedStoreOverwrites documents the threat CheckAddresses
// removes: without it a write replaces what its address held.
func TestUncheckedStoreOverwrites(t *testing.T) {
	s := openTest(t, chunker.Config{})
	y := []byte("the real bytes")
	plant(t, s, blobKey(node.XXH3.Sum(y)), []byte("other"))
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Discard()
	if _, err := b.PutBlob(y); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustStore(t, s, blobKey(node.XXH3.Sum(y)), y)
}

// xxh3Collision is xxh3collide.Pair: two values of n bytes, one xxh3-128.
func xxh3Collision(n int, rest []byte) (a, b []byte) { return xxh3collide.Pair(n, rest) }

// TestCheckAddressesRealCollision: blobs with a real xxh3 collision, in
// one batch, in two concurrent batches, and against a committed one; and
// Batch.CheckAddresses on a store opened without the option.
func TestCheckAddressesRealCollision(t *testing.T) {
	ctx := context.Background()
	a, b := xxh3Collision(2048, bytes.Repeat([]byte("rest of the value "), 200))
	if bytes.Equal(a, b) || node.XXH3.Sum(a) != node.XXH3.Sum(b) {
		t.Fatal("not a collision")
	}
	s := openTest(t, chunker.Config{}) // no Options.CheckAddresses
	newBatch := func() *Batch {
		t.Helper()
		bt, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bt.Discard)
		bt.CheckAddresses()
		return bt
	}
	put := func(bt *Batch, raw []byte, want error) {
		t.Helper()
		if _, err := bt.PutBlob(raw); !errors.Is(err, want) {
			t.Fatalf("PutBlob: %v, want %v", err, want)
		}
	}
	b1 := newBatch()
	put(b1, a, nil)
	put(b1, a, nil)
	put(b1, b, ErrAddressConflict) // pending in the same batch
	b2 := newBatch()
	put(b2, b, ErrAddressConflict) // being written by b1
	put(b2, a, nil)
	if err := b1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b2.Discard()
	b3 := newBatch()
	put(b3, b, ErrAddressConflict) // stored
	b3.Discard()
	mustStore(t, s, blobKey(node.XXH3.Sum(a)), a)
	if len(s.claims) != 0 {
		t.Fatalf("%d claims left", len(s.claims))
	}
	// An unchecked batch of the same store overwrites.
	b4, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	defer b4.Discard()
	put(b4, b, nil)
}
