package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/node"
)

// TestCorruptSSTable: a store whose sstable is damaged on disk fails its
// reads with errors wrapping node.ErrCorrupt (and from then on every
// operation, since the store can no longer be trusted), and never panics:
// Pebble reports corruption to a handler whose default ends the process.
func TestCorruptSSTable(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true, SettleDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	const metas = 3000 // small values, stored inline in the sstable's data blocks
	for i := range metas {
		if err := b.SetMeta(fmt.Sprintf("m%05d", i), []byte(strings.Repeat("v", 100))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Damage the middle of every sstable (data blocks; the footer and
	// index at the end stay intact, so the store opens). The size is
	// unchanged, as with bit rot.
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no sstable")
	}
	for _, path := range ssts {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(raw) / 4; i < len(raw)/4+64; i++ {
			raw[i] ^= 0x5a
		}
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	s, err = Open(dir, &Options{NoSync: true, SettleDelay: -1, Logger: log})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	early, err := s.NewBatch() // begun before the damage is found
	if err != nil {
		t.Fatal(err)
	}
	defer early.Discard()
	early.SetRef("head", node.EmptyRoot(node.XXH3))
	noPanic := func(what string, f func() error) error {
		t.Helper()
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("%s panicked: %v", what, p)
				}
			}()
			err = f()
		}()
		return err
	}
	var first error
	for i := 0; i < metas && first == nil; i++ {
		first = noPanic("Meta", func() error {
			_, err := s.Meta(fmt.Sprintf("m%05d", i))
			return err
		})
	}
	if !errors.Is(first, node.ErrCorrupt) {
		t.Fatalf("reading the damaged records: %v, want an error wrapping ErrCorrupt", first)
	}
	// The store stays failed: other operations report the corruption.
	if _, err := s.NewBatch(); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("NewBatch after the corruption: %v, want ErrCorrupt", err)
	}
	if err := noPanic("Ref", func() error { _, _, err := s.Ref("head"); return err }); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("Ref after the corruption: %v, want ErrCorrupt", err)
	}
	if _, err := s.HasNode(node.XXH3.Sum([]byte("x"))); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("HasNode after the corruption: %v, want ErrCorrupt", err)
	}
	if err := early.Commit(ctx); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("Commit after the corruption: %v, want ErrCorrupt", err)
	}
	if n := strings.Count(logged.String(), "on-disk corruption"); n != 1 {
		t.Fatalf("logged %d reports of one damaged file:\n%s", n, logged.String())
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}
