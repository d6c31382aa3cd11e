package net

import (
	"context"
	"fmt"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// pullChanges takes the retained-base path: the server diffs the client's
// base against target and streams only the changed records. The new tree
// is base + the client's own accepted changes + the server's changes; it
// returns its root, which the caller compares with target.
func (sy *syncer) pullChanges(ctx context.Context, target node.Hash, pushed *pushOutcome) (node.Hash, error) {
	s := sy.store
	b, err := s.NewBatch()
	if err != nil {
		return node.Hash{}, err
	}
	defer b.Discard()
	root := sy.base
	var edits []tree.StoredEdit
	var refs []node.Hash
	flush := func() error {
		if len(refs) > 0 {
			if err := sy.fetchBlobs(ctx, b, refs); err != nil {
				return err
			}
			refs = refs[:0]
		}
		if len(edits) == 0 {
			return nil
		}
		r, err := b.ApplyValues(ctx, root, edits)
		if err != nil {
			return err
		}
		root, edits = r, edits[:0]
		return nil
	}
	if pushed != nil {
		// The client's own accepted changes are not echoed back: re-apply
		// them from the local head (only those pushed: not the ones
		// discarded as unpushable).
		for c, err := range diffScope(ctx, s, sy.base, sy.head0, sy.pushSc) {
			if err != nil {
				return root, err
			}
			if pushed.overridden[string(c.Key)] {
				continue
			}
			e := tree.StoredEdit{Key: append([]byte(nil), c.Key...)}
			if c.New != nil {
				v := cloneValue(*c.New)
				e.Value = &v
			}
			edits = append(edits, e)
			if len(edits) == applyBatch {
				if err := flush(); err != nil {
					return root, err
				}
			}
		}
		if err := flush(); err != nil {
			return root, err
		}
	}
	ex, err := sy.cl.open(ctx)
	if err != nil {
		return root, err
	}
	if err := ex.send(msgGetChange, getChanges{From: sy.base, To: target}.encode(sy.alg())); err != nil {
		return root, err
	}
	if err := ex.closeSend(); err != nil {
		return root, err
	}
	var n uint64
	for {
		f, err := ex.recv(msgChange, msgEnd)
		if err != nil {
			return root, err
		}
		if f.Type == msgEnd {
			cnt, err := decodeEnd(f.Payload)
			if err != nil {
				return root, fmt.Errorf("%s: %w", sy.cl.peer, err)
			}
			if cnt != n {
				return root, fmt.Errorf("%s: %w: End says %d changes, got %d", sy.cl.peer, ErrProtocol, cnt, n)
			}
			if err := ex.expectEOF(); err != nil {
				return root, err
			}
			break
		}
		c, err := decodeChange(sy.alg(), f.Payload)
		if err != nil {
			return root, fmt.Errorf("%s: %w", sy.cl.peer, err)
		}
		n++
		e := tree.StoredEdit{Key: append([]byte(nil), c.Key...)}
		if c.New != nil {
			v := cloneValue(*c.New)
			e.Value = &v
			if v.IsRef {
				refs = append(refs, v.Ref)
			}
		}
		edits = append(edits, e)
		sy.records++
		if len(edits) == applyBatch {
			if err := flush(); err != nil {
				return root, err
			}
		}
		if n%4096 == 0 {
			sy.progress("pull")
		}
	}
	if err := flush(); err != nil {
		return root, err
	}
	sy.res.Pulled = int(n)
	// Commit the new nodes now (no ref moves): the caller moves refs in a
	// small batch that can be retried if head moves.
	if err := b.Commit(ctx); err != nil {
		return root, err
	}
	return root, nil
}

// fetchBlobs makes sure every out-of-line value in refs is stored: index
// blobs and their chunks, chunks first, each verified against its hash.
func (sy *syncer) fetchBlobs(ctx context.Context, b *tree.Batch, refs []node.Hash) error {
	s := sy.store
	seen := map[node.Hash]bool{}
	var need []node.Hash
	for _, r := range refs {
		if seen[r] {
			continue
		}
		seen[r] = true
		if ok, err := s.HasBlob(r); err != nil {
			return err
		} else if !ok {
			need = append(need, r)
		}
	}
	if len(need) == 0 {
		return nil
	}
	var indexes [][]byte
	var chunks []node.Hash
	err := sy.getBlobs(ctx, need, func(h node.Hash, data []byte) error {
		cs, _, err := node.DecodeValueIndex(sy.alg(), data)
		if err != nil {
			return fmt.Errorf("%s: value index %s: %w", sy.cl.peer, h, err)
		}
		indexes = append(indexes, append([]byte(nil), data...))
		for _, c := range cs {
			if seen[c.Hash] {
				continue
			}
			seen[c.Hash] = true
			if ok, err := s.HasBlob(c.Hash); err != nil {
				return err
			} else if !ok {
				chunks = append(chunks, c.Hash)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Chunks are at most chunker.MaxChunk (64 KiB): 128 per request.
	for len(chunks) > 0 {
		n := min(len(chunks), 128)
		if err := sy.getBlobs(ctx, chunks[:n], func(_ node.Hash, data []byte) error {
			_, err := b.PutBlob(data)
			return err
		}); err != nil {
			return err
		}
		chunks = chunks[n:]
	}
	// Indexes last: a stored index implies its chunks are stored.
	for _, ix := range indexes {
		if _, err := b.PutBlob(ix); err != nil {
			return err
		}
	}
	return nil
}

// getBlobs fetches blobs in one exchange, checking each against its hash.
func (sy *syncer) getBlobs(ctx context.Context, hs []node.Hash, fn func(node.Hash, []byte) error) error {
	for len(hs) > 0 {
		n := min(len(hs), 4096)
		part := hs[:n]
		hs = hs[n:]
		ex, err := sy.cl.request(ctx, msgGetBlobs, encodeHashes(sy.alg(), part))
		if err != nil {
			return err
		}
		for _, h := range part {
			f, err := ex.recv(msgBlob)
			if err != nil {
				return err
			}
			if got := sy.alg().Sum(f.Payload); got != h {
				return fmt.Errorf("%s: %w: blob %s: bytes hash to %s", sy.cl.peer, ErrProtocol, h, got)
			}
			if err := fn(h, f.Payload); err != nil {
				return err
			}
			sy.res.BlobsFetched++
		}
		f, err := ex.recv(msgEnd)
		if err != nil {
			return err
		}
		if cnt, err := decodeEnd(f.Payload); err != nil || cnt != uint64(len(part)) {
			return fmt.Errorf("%s: %w: bad End after %d blobs", sy.cl.peer, ErrProtocol, len(part))
		}
		if err := ex.expectEOF(); err != nil {
			return err
		}
	}
	return nil
}
