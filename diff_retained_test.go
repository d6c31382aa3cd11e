package arbor_test

import (
	"context"
	"errors"
	"testing"

	"github.com/arbor-sync/arbor"
)

// TestDiffRemovedRoot: a diff against a root the store no longer holds
// says so, instead of reporting a missing node.
func TestDiffRemovedRoot(t *testing.T) {
	ctx := context.Background()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Put(ctx, []byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	old, err := db.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put(ctx, []byte("k"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	now, err := db.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for _, err := range db.Diff(ctx, old, now, arbor.DiffOptions{}) {
		if !errors.Is(err, arbor.ErrRootNotRetained) {
			t.Fatalf("diff from a collected root: %v, want ErrRootNotRetained", err)
		}
		return
	}
	t.Fatal("diff from a collected root yielded nothing")
}
