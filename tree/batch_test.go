package tree

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

// setSpill lowers spillBytes for one test.
func setSpill(t *testing.T, n int) {
	old := spillBytes
	spillBytes = n
	t.Cleanup(func() { spillBytes = old })
}

// TestBatchSpillKeepsMetaAtomic is a regression test: SetMeta used to write
// into the Pebble batch at once, so a batch that spilled its nodes ahead of
// the commit also wrote its metadata, and a discarded or failed batch left
// the metadata behind.
func TestBatchSpillKeepsMetaAtomic(t *testing.T) {
	ctx := context.Background()
	setSpill(t, 16<<10)
	s := openTest(t, smallConfig)
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta("cursor", []byte("42")); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteMeta("never-set"); err != nil {
		t.Fatal(err)
	}
	// A 200 KiB value is stored as blobs well past the spill threshold.
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	root, err := b.Apply(ctx, node.EmptyRoot, []Edit{{Key: []byte("big"), Value: big}})
	if err != nil {
		t.Fatal(err)
	}
	b.Discard()
	if v, err := s.Meta("cursor"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Discard, Meta = %q, %v; want ErrNotFound", v, err)
	}

	// The same batch committed makes the metadata and the tree visible together.
	b, _ = s.NewBatch()
	b.SetMeta("cursor", []byte("42"))
	b.SetMeta("empty", nil)
	root2, err := b.Apply(ctx, node.EmptyRoot, []Edit{{Key: []byte("big"), Value: big}})
	if err != nil || root2 != root {
		t.Fatalf("Apply = %s, %v; want %s", root2, err, root)
	}
	b.SetRef("head", root2)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Meta("cursor"); err != nil || string(v) != "42" {
		t.Fatalf("Meta(cursor) = %q, %v", v, err)
	}
	if v, err := s.Meta("empty"); err != nil || len(v) != 0 {
		t.Fatalf("Meta(empty) = %q, %v", v, err)
	}
	checkContents(t, s, root2, map[string]string{"big": string(big)})

	// A batch whose ref expectation fails writes no metadata either.
	b, _ = s.NewBatch()
	b.SetMeta("cursor", []byte("43"))
	if _, err := b.Apply(ctx, root2, []Edit{{Key: []byte("big2"), Value: big}}); err != nil {
		t.Fatal(err)
	}
	b.ExpectRef("head", node.EmptyRoot, true)
	if err := b.Commit(ctx); !errors.Is(err, ErrRefMoved) {
		t.Fatalf("Commit = %v, want ErrRefMoved", err)
	}
	if v, _ := s.Meta("cursor"); string(v) != "42" {
		t.Fatalf("failed commit changed Meta(cursor) to %q", v)
	}
	b, _ = s.NewBatch()
	b.DeleteMeta("cursor")
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Meta("cursor"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after DeleteMeta, Meta error = %v", err)
	}
}
