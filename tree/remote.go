package tree

import (
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
	defer wb.Close()
	for i, raw := range raws {
		if raw == nil {
			continue
		}
		if got := s.alg.Sum(raw); got != hs[i] {
			return nil, fmt.Errorf("store %s: remote %s %s: %w: bytes hash to %s", s.dir, kindWord(blobs), hs[i], node.ErrCorrupt, got)
		}
		key := nodeKey(hs[i])
		if blobs {
			key = blobKey(hs[i])
		}
		if err := wb.Set(key, raw, nil); err != nil {
			return nil, err
		}
	}
	if !wb.Empty() {
		if err := wb.Commit(pebble.NoSync); err != nil {
			return nil, fmt.Errorf("store %s: keep remote entries: %w", s.dir, dbErr(err))
		}
	}
	return raws, nil
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
