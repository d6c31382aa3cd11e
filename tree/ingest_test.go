package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// gatedFS holds the first ingest sstable's fsync until gate closes and
// fails the creation of the second.
type gatedFS struct {
	vfs.FS
	gate    chan struct{}
	created atomic.Int32
}

func (fs *gatedFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if strings.Contains(name, ingestPrefix) {
		switch fs.created.Add(1) {
		case 1:
			f, err := fs.FS.Create(name, cat)
			return gatedFile{f, fs.gate}, err
		case 2:
			return nil, errInjected
		}
	}
	return fs.FS.Create(name, cat)
}

type gatedFile struct {
	vfs.File
	gate chan struct{}
}

func (f gatedFile) Sync() error { <-f.gate; return f.File.Sync() }

var errInjected = errors.New("injected create failure")

// TestFailedSpillWaitsForTheOneBefore: when a spill fails early while the
// spill before it is still being written, Commit reports the failure only
// after that spill has ended, so nothing still uses the store when Commit
// (and the Discard in it) returns and the store may be closed.
func TestFailedSpillWaitsForTheOneBefore(t *testing.T) {
	fs := &gatedFS{FS: vfs.Default, gate: make(chan struct{})}
	pebbleOptionsHook = func(po *pebble.Options) { po.FS = fs }
	t.Cleanup(func() { pebbleOptionsHook = nil })
	old := ingestSpillBytes
	ingestSpillBytes = 64 << 10
	t.Cleanup(func() { ingestSpillBytes = old })

	s, b := openBulkLoad(t, 0)
	for i := range 2 { // two spills: the first held at its fsync, the second failing
		if _, err := b.PutBlob(bytes.Repeat([]byte{byte(i)}, 70<<10)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	released := false
	go func() {
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		released = true
		mu.Unlock()
		close(fs.gate)
	}()
	err := b.Commit(context.Background())
	mu.Lock()
	early := !released
	mu.Unlock()
	if !errors.Is(err, errInjected) {
		t.Fatalf("Commit = %v, want the injected failure", err)
	}
	if early {
		t.Fatal("Commit returned while the spill before the failed one was still being written")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBulkTailIngestedInParts: the last part of a bulk load, written at
// Commit, goes in as several non-overlapping sstables written side by side
// (while the spill before it may still be finishing), in one ingestion; the
// store then holds exactly the model, also after a reopen.
func TestBulkTailIngestedInParts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		spillBytes int
		wantSpills uint64 // ingestions before the tail's, at least
	}{
		{"tail only", 8 << 20, 0},
		{"after spills", 96 << 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldSpill, oldTail, oldParts := ingestSpillBytes, ingestTailMin, tailParts
			ingestSpillBytes, ingestTailMin, tailParts = tc.spillBytes, 16<<10, 3
			t.Cleanup(func() { ingestSpillBytes, ingestTailMin, tailParts = oldSpill, oldTail, oldParts })
			dir := t.TempDir()
			s, err := Open(dir, &Options{Chunker: smallConfig, SettleDelay: -1})
			if err != nil {
				t.Fatal(err)
			}
			model := map[string]string{}
			for i := range 3000 {
				model[fmt.Sprintf("k%05d", i)] = fmt.Sprintf("value-%d-%s", i, bytes.Repeat([]byte{'v'}, i%90))
			}
			root := build(t, s, model)
			ingests := s.db.Metrics().Ingest.Count
			var tables uint64
			for _, l := range s.db.Metrics().Levels {
				tables += l.TablesIngested
			}
			if ingests < tc.wantSpills+1 || tables != ingests+2 {
				t.Fatalf("%d ingestions of %d sstables, want at least %d ingestions, the last of 3 sstables",
					ingests, tables, tc.wantSpills+1)
			}
			checkContents(t, s, root, model)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(dir, &Options{Chunker: smallConfig, SettleDelay: -1}); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkContents(t, s, root, model)
			if _, err := s.Verify(context.Background(), root); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBulkSpillBytesOption: Options.BulkSpillBytes sets a bulk load's
// spill size: with a small one, the first blobs are ingested (stored)
// before Commit; with the default, nothing is before Commit.
func TestBulkSpillBytesOption(t *testing.T) {
	for _, tc := range []struct {
		spill     int
		wantEarly bool // the first blob is stored before Commit
	}{{0, false}, {64 << 10, true}} {
		s, b := openBulkLoad(t, tc.spill)
		var hs []node.Hash
		for i := range 8 {
			h, err := b.PutBlob(bytes.Repeat([]byte{byte(i)}, 40<<10))
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		// Spills are ingested on their own goroutine: wait for them.
		if err := b.waitIngest(); err != nil {
			t.Fatal(err)
		}
		early, err := s.HasBlob(hs[0])
		if err != nil {
			t.Fatal(err)
		}
		if early != tc.wantEarly {
			t.Fatalf("BulkSpillBytes %d: first blob stored before Commit = %v", tc.spill, early)
		}
		if err := b.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if ok, err := s.HasBlob(h); err != nil || !ok {
				t.Fatalf("BulkSpillBytes %d: blob %s after Commit: %v, %v", tc.spill, h, ok, err)
			}
		}
		s.Close()
	}
}

// openBulkLoad opens a new NoSync store that never settles in the
// background, with Options.BulkSpillBytes spill, and starts a bulk load.
func openBulkLoad(t *testing.T, spill int) (*Store, *Batch) {
	t.Helper()
	s, err := Open(t.TempDir(), &Options{NoSync: true, SettleDelay: -1, BulkSpillBytes: spill})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	b.BulkLoad()
	return s, b
}
