package tree

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// On-disk corruption.
//
// Pebble checksums every block it reads. When a checksum fails (or a file
// it needs is damaged) it returns an error marked as a corruption error to
// the reader and, first, calls EventListener.DataCorruption, whose default
// calls Logger.Fatalf, which must end the process. The store installs its
// own DataCorruption handler instead (Pebble's read paths are built for a
// handler that returns: the error goes back to the reader, and a
// compaction that hits it fails and is retried later), which records the
// first corruption: from then on every store operation fails with an error
// wrapping node.ErrCorrupt, and the error that found it is wrapped with
// node.ErrCorrupt too. It logs each damaged file once.
//
// Logger.Fatalf is then left to Pebble's other fatal errors: a failed
// write or sync of the write-ahead log or MANIFEST (Pebble: "the commit
// pipeline will be horked"), invariant violations, a table whose size
// differs from the MANIFEST's. Pebble's code after those calls assumes
// Fatalf does not return: it has left reference counts, the commit queue
// or the version set half updated, often with DB.mu or the manifest lock
// held. So Fatalf must stop, and it cannot stop just the goroutine:
// runtime.Goexit would run only that goroutine's deferred calls, leaving
// locks that Pebble took without defer held, so every later operation on
// the store would hang instead of failing (a hung server is worse than a
// crashed one, which a supervisor restarts), and Goexit in a command's
// main goroutine ends in a "no goroutines" crash anyway. Fatalf therefore
// logs the error and panics, as before, after recording it: in Pebble's
// background goroutines the panic ends the process; in a caller's
// goroutine it unwinds to the caller, which should not recover and go on
// using the store (if it does, every operation of the store fails).

// failure is what a store knows of its on-disk health: the first
// corruption (or fatal Pebble error) seen, and where to log.
type failure struct {
	dir string
	log *slog.Logger

	mu     sync.Mutex
	err    error           // nil while healthy; wraps node.ErrCorrupt after corruption
	logged map[string]bool // damaged files already logged
}

func newFailure(dir string, log *slog.Logger) *failure {
	if log == nil {
		log = slog.Default()
	}
	return &failure{dir: dir, log: log}
}

// get returns the recorded failure, or nil.
func (f *failure) get() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// set records err unless a failure is recorded already.
func (f *failure) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

// dataCorruption is the store's pebble.EventListener.DataCorruption. It
// must not block: Pebble calls it in read paths.
func (f *failure) dataCorruption(info pebble.DataCorruptionInfo) {
	f.set(fmt.Errorf("%w: damaged file %s: %v", node.ErrCorrupt, info.Path, info.Details))
	f.mu.Lock()
	first := !f.logged[info.Path]
	if first {
		if f.logged == nil {
			f.logged = map[string]bool{}
		}
		f.logged[info.Path] = true
	}
	f.mu.Unlock()
	if first {
		f.log.Error("arbor store: on-disk corruption; every operation on the store fails from now on",
			"dir", f.dir, "file", info.Path, "err", info.Details)
	}
}

// pebbleLogger is the Logger a store gives Pebble: quiet, except for
// fatal errors (see above). f is nil for options without a store
// (PebbleOptions), which log to slog.Default.
type pebbleLogger struct{ f *failure }

func (pebbleLogger) Infof(string, ...interface{})  {}
func (pebbleLogger) Errorf(string, ...interface{}) {}

func (l pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf("pebble: "+format, args...)
	log, dir := slog.Default(), ""
	if l.f != nil {
		l.f.set(fmt.Errorf("store unusable after a fatal pebble error: %s", msg))
		log, dir = l.f.log, l.f.dir
	}
	log.Error("arbor store: fatal pebble error", "dir", dir, "err", msg)
	panic(msg)
}

// logCorruption is the DataCorruption handler of options without a store
// (PebbleOptions): the reader gets the error; this only logs.
func logCorruption(info pebble.DataCorruptionInfo) {
	slog.Default().Error("pebble: on-disk corruption", "file", info.Path, "err", info.Details)
}

// dbErr wraps a corruption error from Pebble with node.ErrCorrupt.
func dbErr(err error) error {
	if err != nil && pebble.IsCorruptionError(err) && !errors.Is(err, node.ErrCorrupt) {
		return fmt.Errorf("%w: %w", node.ErrCorrupt, err)
	}
	return err
}
