package net

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// Live change notifications. A client that wants to hear of server changes
// opens a Watch exchange: one Watch frame (the heartbeat interval it wants,
// and optionally the scope it replicates), answered by a Root frame with the
// server's root at once, another each time the root moves, and the same
// root again every heartbeat while nothing changes (so that a silent server
// and a dead link are told apart within the client's read timeout). The
// exchange lasts until either side closes the connection. Root changes
// coalesce: a client that reads slowly gets the latest root, not every
// intermediate one.
//
// A watcher with a partial scope (its token's read scope, narrowed by the
// scope it sent) hears only of moves that change a record in that scope:
// the server diffs the last root it announced against the new one within
// the scope, and a move that changes nothing there is not announced (the
// heartbeat repeats the last announced root). A partial replica that
// follows a busy server therefore syncs only when its own records change.

const (
	minHeartbeat = 100 * time.Millisecond
	maxHeartbeat = 5 * time.Minute
	// minWatchInterval is the least time between two evaluations of one
	// scoped watcher (a scoped diff each), which bounds its CPU on a server
	// that commits constantly. An unscoped watcher costs no diff.
	minWatchInterval = 50 * time.Millisecond
)

// encodeWatch encodes a Watch payload: the heartbeat in milliseconds, a
// flag, and the watcher's scope if the flag is 1 (sc neither empty nor
// All; without one the server takes the token's read scope, which All
// would not narrow).
func encodeWatch(heartbeat time.Duration, sc scope.Scope) []byte {
	b := binary.AppendUvarint(nil, uint64(heartbeat.Milliseconds()))
	if sc.IsEmpty() || sc.IsAll() {
		return append(b, 0)
	}
	return appendScope(append(b, 1), sc)
}

// decodeWatch decodes a Watch payload; hasScope is false when it names no
// scope (the watcher takes its token's).
func decodeWatch(p []byte) (hb time.Duration, sc scope.Scope, hasScope bool, err error) {
	d := newDec(msgWatch, 0, p)
	ms := d.uvarint("heartbeat")
	switch d.byte1("scope flag") {
	case 0:
	case 1:
		sc, hasScope = decodeScope(d), true
	default:
		d.fail("scope flag")
	}
	if err := d.done(); err != nil {
		return 0, scope.Scope{}, false, err
	}
	hb = time.Duration(min(ms, uint64(maxHeartbeat/time.Millisecond))) * time.Millisecond
	return min(max(hb, minHeartbeat), maxHeartbeat), sc, hasScope, nil
}

func decodeRoot(alg node.Alg, p []byte) (node.Hash, error) {
	d := newDec(msgRoot, alg, p)
	h := d.hash("root")
	return h, d.done()
}

// watch serves a Watch exchange until the session ends.
func (sess *session) watch(ctx context.Context, ex *exchange, p []byte) error {
	hb, sc, hasScope, err := decodeWatch(p)
	if err != nil {
		return err
	}
	if !hasScope {
		sc = sess.read
	} else {
		sc = sc.Intersect(sess.read)
	}
	s := sess.s
	// Every move of the head costs a scoped diff per range of every
	// watcher: bound the ranges, the watches of a session, and how often
	// one watcher is evaluated.
	if n := len(sc.Ranges()); !sc.IsAll() && n > s.opts.MaxWatchRanges {
		return fmt.Errorf("%w: Watch scope of %d ranges (limit %d)", errLimit, n, s.opts.MaxWatchRanges)
	}
	if !sess.watching.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: a session may hold one Watch at a time", errLimit)
	}
	defer sess.watching.Store(false)
	tick := time.NewTicker(hb)
	defer tick.Stop()
	var sent node.Hash
	var checked time.Time
	first := true
	for {
		if wait := minWatchInterval - time.Since(checked); wait > 0 && !first && !sc.IsAll() {
			// Moves within the interval coalesce into the next check.
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			case <-ex.st.Context().Done():
				return nil
			}
		}
		checked = time.Now()
		// Take the broadcast channel before reading the root, so that a
		// move between the two is not missed.
		moved := s.store.RefsChanged()
		root, err := s.store.Root(HeadRef)
		if err != nil {
			return err
		}
		if first || (root != sent && touches(ctx, s.store, sent, root, sc)) {
			if err := ex.send(msgRoot, root.Bytes()); err != nil {
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
			if err := ex.send(msgRoot, sent.Bytes()); err != nil {
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

// touches reports whether moving from root from to root to changes a
// record in sc. It errs on the side of yes: a root it cannot read (one
// garbage collection has removed) counts as a change.
func touches(ctx context.Context, s *tree.Store, from, to node.Hash, sc scope.Scope) bool {
	if sc.IsAll() {
		return true
	}
	for range diffScope(ctx, s, from, to, sc) {
		return true // a change, or an error: either way, announce
	}
	return false
}

// Watch reports the server's root to fn: once at once, then each time it
// moves (intermediate roots may be skipped), until ctx ends (Watch then
// returns nil), fn returns an error (which Watch returns), or the
// connection fails. Watch needs a valid token of any scope; it transfers no
// records. With a partial scope (opts.Scope, or the token's read scope) it
// reports only moves that change a record in that scope. With several
// servers it watches the first that answers (see ClientOptions.Servers);
// a connection lost once watching ends Watch with its error, as with one.
func Watch(ctx context.Context, opts ClientOptions, fn func(root node.Hash) error) error {
	servers, err := serverList(opts)
	if err != nil {
		return err
	}
	opts.defaults(len(servers))
	var cl *client
	_, _, err = tryServers(ctx, &opts, servers, "watch", func(o ClientOptions) error {
		var err error
		cl, err = dial(ctx, o, o.Fingerprint, hello{Token: o.Token, Flags: flagAudit}, nil)
		return err
	})
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
	if err := ex.send(msgWatch, encodeWatch(opts.IOTimeout/3, opts.Scope)); err != nil {
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
		root, err := decodeRoot(cl.w.Hash, f.Payload)
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
// returns nil. It syncs at once, then again each time the server announces
// a root the store is not at (it watches the server, in the store's scope:
// a partial replica hears only of changes to its records) and each time a
// local commit leaves the store's head different from its base (local
// changes to push). Failed syncs and lost connections are
// retried with exponential backoff; errors no retry can fix (a refused
// token, a certificate that does not match, a different chunker config)
// end Follow with that error. With several servers (ClientOptions.Servers)
// each sync and watch starts at the server of the last good sync, and
// fails over from there.
func Follow(ctx context.Context, store *tree.Store, opts ClientOptions, fo FollowOptions) error {
	if fo.MinBackoff <= 0 {
		fo.MinBackoff = 500 * time.Millisecond
	}
	if fo.MaxBackoff < fo.MinBackoff {
		fo.MaxBackoff = max(30*time.Second, fo.MinBackoff)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Watch the scope the store replicates, so that a partial replica
	// hears only of changes to its own records: opts.Scope if set (every
	// sync of Follow's names it), else the scope the store holds, which
	// another sync may change meanwhile; the loop below then restarts the
	// watch with the new one.
	watchScope := func() (scope.Scope, error) {
		if !opts.Scope.IsEmpty() {
			return opts.Scope, nil
		}
		return StoredScope(store)
	}
	var (
		wmu       sync.Mutex
		watched   scope.Scope        // the scope of the watch running now
		restart   context.CancelFunc // ends that watch
		preferred string             // the server of the last good sync
	)
	// current returns opts with the server of the last good sync first.
	current := func() ClientOptions {
		wmu.Lock()
		defer wmu.Unlock()
		return preferServer(opts, preferred)
	}
	// Both sides read the scope under wmu, so a watch never starts with a
	// scope older than the last rewatch saw.
	rewatch := func() error {
		wmu.Lock()
		defer wmu.Unlock()
		sc, err := watchScope()
		if err != nil {
			return err
		}
		if restart != nil && !sc.Equal(watched) {
			restart()
			restart = nil
		}
		return nil
	}

	// The watcher records the server's latest root and wakes the loop.
	serverRoot := make(chan node.Hash, 1)
	go func() {
		backoff := fo.MinBackoff
		for ctx.Err() == nil {
			wctx, wcancel := context.WithCancel(ctx)
			wmu.Lock()
			sc, err := watchScope()
			watched, restart = sc, wcancel
			wmu.Unlock()
			if err != nil {
				wcancel()
				cancel(err)
				return
			}
			wopts := current()
			wopts.Scope = sc
			if sc.IsAll() {
				wopts.Scope = scope.Scope{} // the token's scope: name none
			}
			err = Watch(wctx, wopts, func(root node.Hash) error {
				backoff = fo.MinBackoff
				select {
				case <-serverRoot:
				default:
				}
				serverRoot <- root
				return nil
			})
			rescoped := wctx.Err() != nil && ctx.Err() == nil
			wcancel()
			if rescoped {
				continue // the store's scope changed: watch the new one now
			}
			if permanent(err) {
				cancel(err)
				return
			}
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, fo.MaxBackoff)
		}
	}()

	backoff := fo.MinBackoff
	// trigger is the announced root that set off the sync about to run
	// (zero for another reason: the start, local changes, a retry); seen
	// is the one that set off the last good sync. A repeat of seen (the
	// server's heartbeat) needs no sync. Any other announced root the
	// store is not at does, even one announced before: roots are content
	// addressed, so the server may move back to an earlier one after a
	// push of ours (A, ours, A again); and for a partial scope the server
	// announces only moves that change the scope, so after a push of ours
	// it may still be repeating an older root. A sync for another reason
	// therefore forgets seen, and the heartbeat that follows costs at most
	// one sync that finds nothing.
	var trigger, seen node.Hash
	for {
		res, err := Sync(ctx, store, current())
		if ctx.Err() != nil {
			return followEnd(ctx)
		}
		if res != nil && res.Server != "" {
			wmu.Lock()
			preferred = res.Server
			wmu.Unlock()
		}
		if fo.OnSync != nil {
			fo.OnSync(res, err)
		}
		if err != nil && !(errors.Is(err, ErrRootMismatch) && reachedServer(store, res)) {
			// A root mismatch that the repair walk fixed is a good sync;
			// one it did not fix is retried like any failure.
			if permanent(err) {
				return err
			}
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, fo.MaxBackoff)
			continue
		}
		backoff = fo.MinBackoff
		seen, trigger = trigger, node.Hash{}
		if err := rewatch(); err != nil {
			return err
		}
		// Wait for a reason to sync again: local changes, or an announced
		// root this store is not at (see above).
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
			if head != base || !trigger.IsZero() {
				break
			}
			select {
			case r := <-serverRoot:
				if r != base && r != seen {
					trigger = r
				}
			case <-local:
				// Another sync may have changed the store's scope.
				if err := rewatch(); err != nil {
					return err
				}
			case <-ctx.Done():
				return followEnd(ctx)
			}
		}
	}
}

// reachedServer reports whether a sync that returned res left store's base
// at the server's root (a root mismatch repaired by its walk does).
func reachedServer(store *tree.Store, res *SyncResult) bool {
	if res == nil {
		return false
	}
	base, ok, err := store.Ref(BaseRef)
	return err == nil && ok && base == res.ServerRoot
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
		errors.Is(err, ErrConfigMismatch) || errors.Is(err, ErrForbiddenScope) ||
		errors.Is(err, ErrVersion) || errors.Is(err, ErrProtocol) ||
		errors.Is(err, ErrNoSyncHistory) || errors.Is(err, ErrUnpushable)
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
