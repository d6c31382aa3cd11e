package tree

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

	s, err := Open(t.TempDir(), &Options{NoSync: true, SettleDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	b.BulkLoad()
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
	err = b.Commit(context.Background())
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
