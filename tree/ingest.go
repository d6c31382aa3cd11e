package tree

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// ingestSpillBytes is the spill size of a bulk load (a Batch with a
// Builder): each spill becomes one sstable ingested into Pebble. Larger
// than spillBytes because every ingestion pays a few fsyncs.
var ingestSpillBytes = 32 << 20

const ingestPrefix = "arbor-ingest-"

// kv is one Pebble record of a spill.
type kv struct{ k, v []byte }

// startIngest hands the batch's unspilled nodes and blobs to a goroutine
// that writes them as one sorted sstable and ingests it, so that the next
// nodes are built meanwhile (as Pebble flushes memtables in the
// background). At most one spill is in flight.
func (b *Batch) startIngest() error {
	if err := b.waitIngest(); err != nil {
		return err
	}
	kvs := b.spillKVs
	b.spillKVs = nil
	if len(kvs) == 0 {
		return nil
	}
	done := make(chan error, 1)
	b.ingesting = done
	go func() { done <- b.s.ingest(kvs) }()
	return nil
}

// waitIngest waits for the spill in flight, if any, and returns its error.
func (b *Batch) waitIngest() error {
	if b.ingesting == nil {
		return nil
	}
	err := <-b.ingesting
	b.ingesting = nil
	return err
}

// ingest writes kvs (refs and metadata never: they enter a batch only at
// Commit) as one sorted sstable and ingests it. Ingestion skips Pebble's
// write-ahead log and memtable, and is durable and atomic when it returns.
func (s *Store) ingest(kvs []kv) error {
	// Keys are content addresses: a key set twice has the same value.
	slices.SortFunc(kvs, func(a, c kv) int { return bytes.Compare(a.k, c.k) })
	kvs = slices.CompactFunc(kvs, func(a, c kv) bool { return bytes.Equal(a.k, c.k) })

	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(s.dir, ingestPrefix+hex.EncodeToString(rnd[:])+".sst")
	f, err := s.popts.FS.Create(path, "")
	if err != nil {
		return err
	}
	wo := s.popts.MakeWriterOptions(0, s.db.TableFormat())
	// Node keys are hashes, so ingested tables overlap and Pebble compacts
	// them soon, moving their values to compressed blob files: compressing
	// them here would be done twice.
	wo.Compression = sstable.NoCompression
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), wo)
	for _, e := range kvs {
		if err := w.Set(e.k, e.v); err != nil {
			w.Close()
			os.Remove(path)
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := w.Close(); err != nil { // syncs and closes f
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := s.db.Ingest(context.Background(), []string{path}); err != nil {
		os.Remove(path)
		return fmt.Errorf("ingest %s: %w", path, err)
	}
	return nil // Pebble linked the file in and removed path
}

// removeIngestLeftovers deletes sstables a crash left before ingestion.
func removeIngestLeftovers(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ingestPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
