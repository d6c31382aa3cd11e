package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/cockroachdb/pebble/v2"
)

// copyStore makes dst a copy of the closed store in src: a Pebble
// checkpoint (sstables hard-linked, the rest copied) plus the Arbor marker
// file. It is how every sync run starts from the same client state without
// rebuilding it.
func copyStore(src, dst string) error {
	db, err := openRawPebble(src)
	if err != nil {
		return err
	}
	if err := db.Checkpoint(dst, pebble.WithFlushedWAL()); err != nil {
		db.Close()
		return fmt.Errorf("checkpoint %s: %w", src, err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	return copyFile(filepath.Join(src, "ARBOR"), filepath.Join(dst, "ARBOR"))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// setRefs points refs at root in the closed store in dir.
func setRefs(ctx context.Context, dir string, root node.Hash, refs ...string) error {
	s, err := tree.Open(dir, &tree.Options{NoSync: true, MustExist: true})
	if err != nil {
		return err
	}
	b, err := s.NewBatch()
	if err != nil {
		s.Close()
		return err
	}
	for _, r := range refs {
		b.SetRef(r, root)
	}
	if err := b.Commit(ctx); err != nil {
		s.Close()
		return err
	}
	return s.Close()
}
