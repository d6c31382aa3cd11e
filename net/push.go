package net

import (
	"context"
	"errors"
	"fmt"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// pushChunkBytes is the size at which the client ends one push and starts
// the next; each push commits atomically on the server.
const pushChunkBytes = 8 << 20

// pushOutcome is what the server did with the client's local changes.
type pushOutcome struct {
	root       node.Hash         // the server's root after the last push
	overridden map[string]bool   // keys whose local change lost
	order      [][]byte          // overridden keys in key order
	reasons    map[string]string // key → the server's validation reason, for rejected changes
}

// push sends the local changes base→head, in pushes of bounded size.
func (sy *syncer) push(ctx context.Context) (*pushOutcome, error) {
	out := &pushOutcome{root: sy.cl.w.Root, overridden: map[string]bool{}, reasons: map[string]string{}}
	var (
		ex    *exchange
		keys  [][]byte
		bytes int
		buf   []byte
	)
	finish := func() error {
		if err := ex.send(msgEnd, encodeEnd(uint64(len(keys)))); err != nil {
			return err
		}
		if err := ex.closeSend(); err != nil {
			return err
		}
		f, err := ex.recv(msgPushDone)
		if err != nil {
			return err
		}
		m, err := decodePushDone(sy.alg(), f.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w", sy.cl.peer, err)
		}
		if err := ex.expectEOF(); err != nil {
			return err
		}
		if m.Accepted+uint64(len(m.Overridden)) != uint64(len(keys)) {
			return fmt.Errorf("%s: %w: push of %d changes: %d accepted, %d overridden", sy.cl.peer, ErrProtocol, len(keys), m.Accepted, len(m.Overridden))
		}
		for _, i := range m.Overridden {
			if i >= uint64(len(keys)) || out.overridden[string(keys[i])] {
				return fmt.Errorf("%s: %w: bad overridden index %d", sy.cl.peer, ErrProtocol, i)
			}
			out.overridden[string(keys[i])] = true
			out.order = append(out.order, keys[i])
		}
		for _, r := range m.Rejected {
			if r.Index >= uint64(len(keys)) || !out.overridden[string(keys[r.Index])] {
				return fmt.Errorf("%s: %w: bad rejected index %d", sy.cl.peer, ErrProtocol, r.Index)
			}
			out.reasons[string(keys[r.Index])] = r.Reason
		}
		sy.res.Accepted += int(m.Accepted)
		out.root = m.Root
		ex, keys, bytes = nil, keys[:0], 0
		return nil
	}
	for c, err := range diffScope(ctx, sy.store, sy.base, sy.head0, sy.pushSc) {
		if err != nil {
			return nil, err
		}
		pc := pushChange{Key: c.Key, HasFrom: c.Old != nil, Delete: c.New == nil}
		if c.Old != nil {
			pc.From = valueHash(sy.alg(), *c.Old)
		}
		if c.New != nil {
			v, err := sy.store.ReadValue(ctx, *c.New)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", c.Key, err)
			}
			pc.Value = v
		}
		buf = pc.encode(sy.alg(), buf[:0])
		if len(buf) > sy.opts.MaxFrame {
			return nil, fmt.Errorf("key %q: value of %d bytes: %w (push frames are limited to %d bytes)", c.Key, len(pc.Value), ErrFrameTooLarge, sy.opts.MaxFrame)
		}
		if ex != nil && bytes+len(buf) > pushChunkBytes {
			if err := finish(); err != nil {
				return nil, err
			}
		}
		if ex == nil {
			if ex, err = sy.cl.open(ctx); err != nil {
				return nil, err
			}
		}
		if err := ex.send(msgPush, buf); err != nil {
			return nil, err
		}
		keys = append(keys, append([]byte(nil), c.Key...))
		bytes += len(buf) + maxHeader
		sy.res.Pushed++
		sy.records++
		if sy.res.Pushed%4096 == 0 {
			sy.progress("push")
		}
	}
	if ex != nil {
		if err := finish(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// reportOverridden fills SyncResult.Overridden with the local and server
// values of every overridden key.
func (sy *syncer) reportOverridden(ctx context.Context, p *pushOutcome, root node.Hash) error {
	for _, k := range p.order {
		o := Overridden{Key: k, Reason: p.reasons[string(k)]}
		var err error
		if o.Local, err = sy.readOpt(ctx, sy.head0, k); err != nil {
			return err
		}
		if !sy.sc.Contains(k) {
			// Outside the replica's new scope: the server's value is not
			// held (nor, with the read scope narrowed, readable).
		} else if o.Server, err = sy.readOpt(ctx, root, k); err != nil {
			return err
		}
		sy.res.Overridden = append(sy.res.Overridden, o)
	}
	return nil
}

func (sy *syncer) readOpt(ctx context.Context, root node.Hash, key []byte) (*[]byte, error) {
	v, err := sy.store.Get(ctx, root, key)
	if errors.Is(err, tree.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	return &v, nil
}
