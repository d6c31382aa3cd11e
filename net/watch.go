package net

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// Live change notifications. A client that wants to hear of server changes
// opens a Watch exchange: one Watch frame (the heartbeat interval it wants),
// answered by a Root frame with the server's root at once, another each
// time the root moves, and the same root again every heartbeat while
// nothing changes (so that a silent server and a dead link are told apart
// within the client's read timeout). The exchange lasts until either side
// closes the connection. Root changes coalesce: a client that reads slowly
// gets the latest root, not every intermediate one.

const (
	minHeartbeat = 100 * time.Millisecond
	maxHeartbeat = 5 * time.Minute
)

func encodeWatch(heartbeat time.Duration) []byte {
	return binary.AppendUvarint(nil, uint64(heartbeat.Milliseconds()))
}

func decodeWatch(p []byte) (time.Duration, error) {
	d := newDec(msgWatch, p)
	ms := d.uvarint("heartbeat")
	if err := d.done(); err != nil {
		return 0, err
	}
	hb := time.Duration(min(ms, uint64(maxHeartbeat/time.Millisecond))) * time.Millisecond
	return min(max(hb, minHeartbeat), maxHeartbeat), nil
}

func decodeRoot(p []byte) (node.Hash, error) {
	d := newDec(msgRoot, p)
	h := d.hash("root")
	return h, d.done()
}

// watch serves a Watch exchange until the session ends.
func (sess *session) watch(ctx context.Context, ex *exchange, p []byte) error {
	hb, err := decodeWatch(p)
	if err != nil {
		return err
	}
	s := sess.s
	tick := time.NewTicker(hb)
	defer tick.Stop()
	var sent node.Hash
	first := true
	for {
		// Take the broadcast channel before reading the root, so that a
		// move between the two is not missed.
		moved := s.store.RefsChanged()
		root, err := s.store.Root(HeadRef)
		if err != nil {
			return err
		}
		if first || root != sent {
			if err := ex.send(msgRoot, root[:]); err != nil {
				return err
			}
			if err := ex.flush(); err != nil {
				return err
			}
			sent, first = root, false
			tick.Reset(hb)
		}
		select {
		case <-moved:
		case <-tick.C:
			if err := ex.send(msgRoot, sent[:]); err != nil {
				return err
			}
			if err := ex.flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		case <-ex.st.Context().Done():
			return nil // the client went away
		}
	}
}

// Watch reports the server's root to fn: once at once, then each time it
// moves (intermediate roots may be skipped), until ctx ends (Watch then
// returns nil), fn returns an error (which Watch returns), or the
// connection fails. Watch needs a valid token of any scope; it transfers no
// records.
func Watch(ctx context.Context, opts ClientOptions, fn func(root node.Hash) error) error {
	opts.defaults()
	cl, err := dial(ctx, opts, opts.Fingerprint, hello{Token: opts.Token, Flags: flagAudit})
	if err != nil {
		return err
	}
	defer cl.close()
	ex, err := cl.open(ctx)
	if err != nil {
		return err
	}
	// Heartbeats well inside the read timeout, so a live but idle server
	// never looks dead.
	if err := ex.send(msgWatch, encodeWatch(opts.IOTimeout/3)); err != nil {
		return err
	}
	if err := ex.closeSend(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, cl.close)
	defer stop()
	var last node.Hash
	first := true
	for {
		f, err := ex.recv(msgRoot)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch: %w", err)
		}
		root, err := decodeRoot(f.Payload)
		if err != nil {
			return fmt.Errorf("watch: %s: %w", ex.peer, err)
		}
		if first || root != last {
			first, last = false, root
			if err := fn(root); err != nil {
				return err
			}
		}
	}
}

// FollowOptions tune Follow. The zero value is usable.
type FollowOptions struct {
	// OnSync, if set, is called after every sync with its result or error.
	OnSync func(res *SyncResult, err error)
	// MinBackoff and MaxBackoff bound the wait before retrying after a
	// failed sync or a lost watch connection. Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
}

// Follow keeps store in sync with the server until ctx ends, when it
// returns nil. It syncs at once, then again each time the server's root
// moves away from the last root they agreed on (it watches the server for
// that) and each time a local commit leaves the store's head different from
// its base (local changes to push). Failed syncs and lost connections are
// retried with exponential backoff; errors no retry can fix (a refused
// token, a certificate that does not match, a different chunker config)
// end Follow with that error.
func Follow(ctx context.Context, store *tree.Store, opts ClientOptions, fo FollowOptions) error {
	if fo.MinBackoff <= 0 {
		fo.MinBackoff = 500 * time.Millisecond
	}
	if fo.MaxBackoff < fo.MinBackoff {
		fo.MaxBackoff = max(30*time.Second, fo.MinBackoff)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The watcher records the server's latest root and wakes the loop.
	var (
		serverRoot = make(chan node.Hash, 1)
		latest     node.Hash
		known      bool
	)
	go func() {
		backoff := fo.MinBackoff
		for ctx.Err() == nil {
			err := Watch(ctx, opts, func(root node.Hash) error {
				backoff = fo.MinBackoff
				select {
				case <-serverRoot:
				default:
				}
				serverRoot <- root
				return nil
			})
			if permanent(err) {
				cancel(err)
				return
			}
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, fo.MaxBackoff)
		}
	}()

	backoff := fo.MinBackoff
	for {
		res, err := Sync(ctx, store, opts)
		if ctx.Err() != nil {
			return followEnd(ctx)
		}
		if fo.OnSync != nil {
			fo.OnSync(res, err)
		}
		if err != nil && !errors.Is(err, ErrRootMismatch) {
			if permanent(err) {
				return err
			}
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, fo.MaxBackoff)
			continue
		}
		backoff = fo.MinBackoff
		// Only roots reported from now on count (the channel keeps the
		// latest report not yet read, which may be newer than what this
		// sync saw).
		known = false
		// Wait for a reason to sync again.
		for {
			local := store.RefsChanged()
			base, _, err := store.Ref(BaseRef)
			if err != nil {
				return err
			}
			head, _, err := store.Ref(HeadRef)
			if err != nil {
				return err
			}
			if head != base || (known && latest != base) {
				break
			}
			select {
			case latest = <-serverRoot:
				known = true
			case <-local:
			case <-ctx.Done():
				return followEnd(ctx)
			}
		}
	}
}

// followEnd returns nil when Follow's caller ended it, else why it ended.
func followEnd(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrFingerprint) ||
		errors.Is(err, ErrConfigMismatch) || errors.Is(err, ErrForbiddenScope)
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
