package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	stdnet "net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
	"github.com/quic-go/quic-go"
)

// follower runs 'arbor sync --watch': it syncs at once, then each time the
// server announces a root the store is not at, until interrupted.
//
// It is built on DB.Sync and WatchServer rather than DB.Follow, which
// cannot tell its caller when its watch connection drops or comes back
// (an idle follower loses and regains the server with no sync to report
// either), and which ends on a refused token. Here a lost connection and
// its return are reported; a refused token is reported and retried with
// backoff, so that a follower outlives a token rotation or a server
// restarted with a tokens file being fixed. What Follow does beyond this
// loop is pushing local writes made while it runs and rewatching when
// another sync changes the store's scope: neither can happen here, since
// this process holds the store for as long as it follows.
type follower struct {
	db          *arbor.DB
	opts        arbor.SyncOptions
	onFirstSync func()                           // called after the first good sync
	minBackoff  time.Duration                    // the first retry's wait; it doubles up to maxBackoff
	maxBackoff  time.Duration                    //
	out         func(format string, args ...any) // status lines (standard error)

	mu        sync.Mutex
	preferred string // the server of the last good sync, tried first
	state     linkState
	since     time.Time // when the link went down or the token was refused
	good      int       // syncs that succeeded
	failures  int       // syncs that failed
}

// linkState is what the follower last learned of its server.
type linkState int

const (
	linkUnknown linkState = iota
	linkUp
	linkDown    // the server could not be reached or the connection broke
	linkRefused // the server refused the token
)

// errClass sorts sync and watch errors into how the follower treats them.
type errClass int

const (
	errOther   errClass = iota // retried: reported as a failed sync
	errLink                    // retried: the connection was lost or never made
	errRefused                 // retried: the token (or its scope) was refused
	errFatal                   // ends the follower: retrying cannot fix it
)

func classify(err error) errClass {
	switch {
	case errors.Is(err, arbor.ErrUnauthorized) || errors.Is(err, arbor.ErrForbiddenScope):
		return errRefused
	case errors.Is(err, arbor.ErrFingerprint) || errors.Is(err, arbor.ErrConfigMismatch) ||
		errors.Is(err, arbor.ErrVersion) || errors.Is(err, arbor.ErrProtocol) ||
		errors.Is(err, arbor.ErrNoSyncHistory) || errors.Is(err, arbor.ErrUnpushable) ||
		errors.Is(err, arbor.ErrRefused):
		return errFatal
	}
	var ne stdnet.Error
	var ae *quic.ApplicationError
	var te *quic.TransportError
	if errors.As(err, &ne) || errors.As(err, &ae) || errors.As(err, &te) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) {
		return errLink
	}
	return errOther
}

// up records that the server answered.
func (f *follower) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.state {
	case linkDown:
		f.out("connection to %s is back (lost for %s)", f.names(), roundDuration(time.Since(f.since)))
	case linkRefused:
		f.out("%s accepts the token now", f.names())
	}
	f.state = linkUp
}

// failed records an error of a sync or of the watch, and reports it when
// it changes what is known of the link (a refused token every time, with
// the wait before the next try).
func (f *follower) failed(err error, retry time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch classify(err) {
	case errLink:
		if f.state != linkDown {
			f.state, f.since = linkDown, time.Now()
			f.out("connection to %s lost: %v; reconnecting", f.names(), err)
		}
	case errRefused:
		if f.state != linkRefused {
			f.state, f.since = linkRefused, time.Now()
		}
		f.out("%s refused the token: %v; retrying in %s (fix the token file, or the server's tokens file and SIGHUP it)", f.names(), err, retry.Round(time.Millisecond))
	case errOther:
		f.out("sync failed: %v; retrying in %s", err, retry.Round(time.Millisecond))
	}
}

// watchOptions are the options of the watch: the sync's, watching the
// store's scope (a partial replica hears only of changes to its records;
// the zero Scope names none, for the token's whole read scope), with the
// pin the store holds once a first sync has stored it.
func (f *follower) watchOptions() (arbor.SyncOptions, error) {
	o := f.options()
	o.Progress = nil
	if o.Fingerprint == "" && o.CAFile == "" {
		o.Fingerprint = recall(f.db).pin
	}
	if o.Scope.Ranges() == nil {
		sc, err := f.db.Scope()
		if err != nil {
			return o, err
		}
		o.Scope = sc
	}
	if o.Scope.IsAll() {
		o.Scope = scope.Scope{}
	}
	// A shorter I/O timeout than a sync's 30s (unless --io-timeout sets
	// one): the server sends a heartbeat every third of it, so a server
	// that vanished without a word (or that cannot be reached) is reported
	// within 10s.
	if o.IOTimeout == 0 {
		o.IOTimeout = watchIOTimeout
	}
	return o, nil
}

// watchIOTimeout bounds the watch's reads and its connection handshake.
const watchIOTimeout = 10 * time.Second

// watch reports the server's roots on announce (only the latest is kept)
// until ctx ends, reconnecting with backoff; an error no retry can fix goes
// to fatal.
func (f *follower) watch(ctx context.Context, announce chan arbor.Hash, fatal chan<- error, wake <-chan struct{}) {
	backoff := f.minBackoff
	for ctx.Err() == nil {
		wopts, err := f.watchOptions()
		if err == nil {
			err = arbor.WatchServer(ctx, wopts, func(root arbor.Hash) error {
				f.up()
				backoff = f.minBackoff
				select {
				case <-announce:
				default:
				}
				announce <- root
				return nil
			})
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch ended") // the server closed it cleanly
		}
		if classify(err) == errFatal {
			fatal <- fmt.Errorf("watch: %w", err)
			return
		}
		wait := jitter(backoff)
		f.failed(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			backoff = min(2*backoff, f.maxBackoff)
		case <-wake: // a sync got through: so may the watch
			t.Stop()
			backoff = f.minBackoff
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// run follows until ctx ends (then nil) or an error no retry can fix.
func (f *follower) run(ctx context.Context, report func(*arbor.SyncResult, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	announce := make(chan arbor.Hash, 1)
	fatal := make(chan error, 1)
	wake := make(chan struct{}, 1)
	wg.Add(1)
	go func() { defer wg.Done(); f.watch(ctx, announce, fatal, wake) }()

	backoff := f.minBackoff
	// trigger is the announced root that set off the sync about to run
	// (zero for another reason: the start, a retry); seen is the one that
	// set off the last good sync, whose repeat needs no sync (see
	// net.Follow).
	var trigger, seen arbor.Hash
	pending := true
	for {
		if pending {
			res, err := f.db.Sync(ctx, f.options())
			if ctx.Err() != nil {
				return nil
			}
			if res != nil && res.Server != "" {
				f.mu.Lock()
				f.preferred = res.Server
				f.mu.Unlock()
			}
			if err != nil && errors.Is(err, arbor.ErrRootMismatch) && res != nil {
				// A mismatch its repair walk fixed is a good sync.
				if st, serr := f.db.Status(ctx); serr == nil && st.Base == res.ServerRoot {
					err = nil
				}
			}
			f.mu.Lock()
			if err == nil {
				f.good++
			} else {
				f.failures++
			}
			f.mu.Unlock()
			report(res, err)
			if err != nil {
				if classify(err) == errFatal {
					return err
				}
				wait := jitter(backoff)
				f.failed(err, wait)
				backoff = min(2*backoff, f.maxBackoff)
				// Wait, but sync at once if the server announces itself.
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case r := <-announce:
					trigger = r
				case err := <-fatal:
					t.Stop()
					return err
				case <-ctx.Done():
					t.Stop()
					return nil
				}
				t.Stop()
				continue
			}
			f.up()
			select {
			case wake <- struct{}{}:
			default:
			}
			if f.onFirstSync != nil {
				f.onFirstSync()
				f.onFirstSync = nil
			}
			backoff = f.minBackoff
			seen, trigger = trigger, arbor.Hash{}
			pending = false
		}
		select {
		case r := <-announce:
			st, err := f.db.Status(ctx)
			if err != nil {
				return err
			}
			if r != st.Base && r != seen {
				trigger, pending = r, true
			}
		case err := <-fatal:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// names is the servers followed, as --server names them.
func (f *follower) names() string { return joinServers(f.opts.ServerList()) }

// options are the sync options with the server of the last good sync
// first: the next sync and watch start there, instead of waiting on a
// dead server ahead of it in the list each time.
func (f *follower) options() arbor.SyncOptions {
	f.mu.Lock()
	preferred := f.preferred
	f.mu.Unlock()
	return startAt(f.opts, preferred)
}

// startAt returns opts with server, if it is one of its servers, first,
// and the others after it in their order, wrapping around.
func startAt(opts arbor.SyncOptions, server string) arbor.SyncOptions {
	servers := opts.ServerList()
	for i, s := range servers {
		if s == server && i > 0 {
			opts.Server = ""
			opts.Servers = append(append([]string(nil), servers[i:]...), servers[:i]...)
			break
		}
	}
	return opts
}

// counts returns the syncs that succeeded and failed so far.
func (f *follower) counts() (good, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.good, f.failures
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// roundDuration rounds d for people: to 100ms below 10s, to the second
// above.
func roundDuration(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
