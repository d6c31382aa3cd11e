package tree

import (
	"bytes"
	"context"
	"fmt"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// Remote is shared storage behind a store that caches a dataset held
// elsewhere: a cluster server's store (package cluster) reads from it the
// nodes and value blobs it does not hold. A store checks every node and
// blob it fetches against its hash (a mismatch is node.ErrCorrupt, never
// served) and keeps it, so each is fetched once while it stays cached.
type Remote interface {
	// Fetch returns the bytes stored under each hash, nil where the remote
	// holds none: nodes, or value blobs if blobs. One call may cost one
	// request per group of neighbouring entries, so callers ask for many
	// at once.
	Fetch(ctx context.Context, blobs bool, hs []node.Hash) ([][]byte, error)
	// Has reports which of hs the remote holds.
	Has(ctx context.Context, blobs bool, hs []node.Hash) ([]bool, error)
}

// fetchRemote reads hs from the remote, checks each against its hash and
// keeps what it found in the store (without fsync: a cached copy that a
// crash loses is fetched again). It returns nil entries for hashes the
// remote does not hold.
func (s *Store) fetchRemote(ctx context.Context, blobs bool, hs []node.Hash) ([][]byte, error) {
	raws, err := s.remote.Fetch(ctx, blobs, hs)
	if err != nil {
		return nil, fmt.Errorf("store %s: fetch from remote: %w", s.dir, err)
	}
	if len(raws) != len(hs) {
		return nil, fmt.Errorf("store %s: remote returned %d entries for %d hashes", s.dir, len(raws), len(hs))
	}
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	size := 0
	for _, raw := range raws {
		size += len(raw) + 64
	}
	wb := s.db.NewBatchWithSize(size)
	var keys []string
	var vals [][]byte
	for i, raw := range raws {
		if raw == nil {
			continue
		}
		if got := s.alg.Sum(raw); got != hs[i] {
			wb.Close()
			return nil, fmt.Errorf("store %s: remote %s %s: %w: bytes hash to %s", s.dir, kindWord(blobs), hs[i], node.ErrCorrupt, got)
		}
		key := nodeKey(hs[i])
		if blobs {
			key = blobKey(hs[i])
		}
		if err := wb.Set(key, raw, nil); err != nil {
			wb.Close()
			return nil, err
		}
		keys, vals = append(keys, string(key)), append(vals, raw)
	}
	if wb.Empty() {
		wb.Close()
		return raws, nil
	}
	w := remoteWrite{wb: wb, keys: keys}
	{
		s.remotePendingMu.Lock()
		for i, k := range keys {
			s.remotePending[k] = vals[i]
		}
		s.remotePendingMu.Unlock()
		select {
		case s.remoteWrites <- w:
			return raws, nil
		default: // the writer is behind: this caller commits its own batch
			defer s.unpend(w)
		}
	}
	err = wb.Commit(pebble.NoSync)
	wb.Close()
	if err != nil {
		return nil, fmt.Errorf("store %s: keep remote entries: %w", s.dir, dbErr(err))
	}
	return raws, nil
}

// Entries fetched from the remote are kept in the local store by a
// goroutine of their own, so that a reader (a cold server's subtree
// stream, its prefetch) does not wait for the commit: the caller has the
// verified bytes and decodes them into the node cache. Until the commit a
// read that misses the cache fetches the entry again, which is only a
// repeated GET. A failed commit loses nothing either: the entries are a
// cache of the remote. The queue is short; when it is full the caller
// commits its own batch.
const remoteWriteQueue = 4

// remoteWrite is a batch of fetched entries and their keys.
type remoteWrite struct {
	wb   *pebble.Batch
	keys []string
}

// writeRemote commits the queued batches until Close closes the queue.
func (s *Store) writeRemote() {
	defer close(s.remoteDone)
	for w := range s.remoteWrites {
		if done, err := s.use(); err == nil {
			w.wb.Commit(pebble.NoSync) // see above: a failure costs a later GET
			done()
		}
		w.wb.Close()
		s.unpend(w)
	}
}

// unpend forgets a batch's entries once it is committed (or dropped).
func (s *Store) unpend(w remoteWrite) {
	s.remotePendingMu.Lock()
	for _, k := range w.keys {
		delete(s.remotePending, k)
	}
	s.remotePendingMu.Unlock()
}

// pendingRemote returns the fetched entry under key that is queued for
// the writer, if any.
func (s *Store) pendingRemote(key []byte) ([]byte, bool) {
	if s.remote == nil {
		return nil, false
	}
	s.remotePendingMu.Lock()
	raw, ok := s.remotePending[string(key)]
	s.remotePendingMu.Unlock()
	return bytes.Clone(raw), ok
}

// stopRemoteWriter ends the writer once no operation can queue a batch
// (Close calls it after the last one has finished); batches still queued
// are dropped.
func (s *Store) stopRemoteWriter() {
	if s.remoteDone == nil {
		return
	}
	close(s.remoteWrites)
	<-s.remoteDone
}

// remoteHas reports, for the hashes marked in ask, whether the remote holds
// them, setting out[i] to true for those it does.
func (s *Store) remoteHas(ctx context.Context, blobs bool, hs []node.Hash, out []bool) error {
	var ask []node.Hash
	var at []int
	for i, ok := range out {
		if !ok {
			ask, at = append(ask, hs[i]), append(at, i)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	held, err := s.remote.Has(ctx, blobs, ask)
	if err != nil {
		return fmt.Errorf("store %s: ask remote: %w", s.dir, err)
	}
	if len(held) != len(ask) {
		return fmt.Errorf("store %s: remote answered %d of %d hashes", s.dir, len(held), len(ask))
	}
	for j, i := range at {
		out[i] = held[j]
	}
	return nil
}

func kindWord(blobs bool) string {
	if blobs {
		return "blob"
	}
	return "node"
}

// HasRemote reports whether the store reads through to a Remote.
func (s *Store) HasRemote() bool { return s.remote != nil }
