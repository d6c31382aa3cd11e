package tree

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

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

// ingestTailMin is the least a bulk load's last part must be to be
// ingested at Commit rather than written through the write-ahead log.
var ingestTailMin = 4 << 20

// tailParts is how many sstables a bulk load's last part is written as,
// side by side: one per CPU, up to 4.
var tailParts = min(runtime.GOMAXPROCS(0), 4)

// ingestBlockSize is the data block size of ingested sstables. Their values
// are whole nodes of a few KiB, so Pebble's default of 4 KiB would make a
// block, with its index entry and columnar header, of nearly every value;
// 64 KiB blocks take well under half the time to write. Point reads then
// read larger blocks, until compaction moves the values to blob files.
const ingestBlockSize = 64 << 10

// spill is one ingestion in flight. done closes when it ends; err is then
// its error, or the first error of a spill before it.
type spill struct {
	done chan struct{}
	err  error
}

// startIngest hands the batch's unspilled nodes and blobs to a goroutine
// that writes them as sorted sstables (parts of them, side by side) and
// ingests them, so that the next nodes are built meanwhile (as Pebble
// flushes memtables in the background). Up to two spills are in flight:
// each writes its sstables at once but ingests them only after the spill
// before it, since a later spill may hold the parents of an earlier one's
// nodes, and a stored node must always have its subtree stored.
func (b *Batch) startIngest(parts int) error {
	if prev := b.ingestPrev; prev != nil {
		<-prev.done
		b.ingestPrev = nil
		if prev.err != nil {
			return prev.err
		}
	}
	kvs := b.spillKVs
	b.spillKVs = nil
	if len(kvs) == 0 {
		return nil
	}
	b.ingested = true
	prev, sp := b.ingesting, &spill{done: make(chan struct{})}
	b.ingestPrev, b.ingesting = prev, sp
	go func() {
		defer close(sp.done)
		sp.err = b.s.ingest(kvs, prev, parts)
	}()
	return nil
}

// waitIngest waits for every spill in flight and returns the first error.
func (b *Batch) waitIngest() error {
	sp := b.ingesting
	if sp == nil {
		return nil
	}
	<-sp.done
	b.ingesting, b.ingestPrev = nil, nil
	return sp.err
}

// ingest writes kvs (refs and metadata never: they enter a batch only at
// Commit) as sorted sstables, parts of them written side by side, and
// ingests them together once the spill prev (if not nil) has ended,
// failing with prev's error if it failed. Ingestion skips Pebble's
// write-ahead log and memtable, and is durable and atomic when it returns.
func (s *Store) ingest(kvs []kv, prev *spill, parts int) error {
	if prev != nil {
		// Never end before the spill before this one, even on an early
		// error: waiters (Commit, Discard) wait for the latest spill only,
		// and must not return while an older one still uses the store.
		defer func() { <-prev.done }()
	}
	// Keys are content addresses: a key set twice has the same value.
	slices.SortFunc(kvs, func(a, c kv) int { return bytes.Compare(a.k, c.k) })
	kvs = slices.CompactFunc(kvs, func(a, c kv) bool { return bytes.Equal(a.k, c.k) })

	// Consecutive runs of sorted keys make sstables that do not overlap
	// one another, so one Ingest takes them all.
	parts = max(1, min(parts, len(kvs)))
	paths := make([]string, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := range parts {
		part := kvs[len(kvs)*i/parts : len(kvs)*(i+1)/parts]
		if i == parts-1 {
			paths[i], errs[i] = s.writeSSTable(part)
			break
		}
		wg.Go(func() { paths[i], errs[i] = s.writeSSTable(part) })
	}
	wg.Wait()
	removeAll := func() {
		for _, p := range paths {
			if p != "" {
				os.Remove(p)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		removeAll()
		return err
	}
	if prev != nil {
		if <-prev.done; prev.err != nil {
			removeAll()
			return prev.err
		}
	}
	if err := s.db.Ingest(context.Background(), paths); err != nil {
		removeAll()
		return fmt.Errorf("ingest %s: %w", strings.Join(paths, ", "), err)
	}
	return nil // Pebble linked the files in and removed paths
}

// writeSSTable writes sorted kvs as a synced sstable to be ingested and
// returns its path. On error it leaves no file.
func (s *Store) writeSSTable(kvs []kv) (string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(s.dir, ingestPrefix+hex.EncodeToString(rnd[:])+".sst")
	f, err := s.popts.FS.Create(path, "")
	if err != nil {
		return "", err
	}
	wo := s.popts.MakeWriterOptions(0, s.db.TableFormat())
	// Node keys are hashes, so ingested tables overlap and Pebble compacts
	// them soon, moving their values to compressed blob files: compressing
	// them here would be done twice.
	wo.Compression = sstable.NoCompression
	wo.BlockSize = ingestBlockSize
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), wo)
	for _, e := range kvs {
		if err := w.Set(e.k, e.v); err != nil {
			w.Close()
			os.Remove(path)
			return "", fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := w.Close(); err != nil { // syncs and closes f
		os.Remove(path)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
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
