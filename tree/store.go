package tree

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/arbor-sync/arbor/internal/fsutil"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// FormatVersion is the store layout version written in the marker file.
// Version 2 may store nodes as deltas (see delta.go); version 3 may hold
// working-set edits (working.go), which an arbor that knows only version 2
// would ignore, and a later open then replay over newer writes. This
// package reads versions 1 and 2 too and marks them version 3 when it opens
// them, so that an older arbor refuses them from then on. Version 4 is
// version 3 with another hash than xxh3 (Options.Hash), whose nodes an
// arbor that knows only xxh3 would call corrupt: only such stores carry it.
const FormatVersion = 4

// formatFor is the marker version of a store hashing with alg.
func formatFor(alg node.Alg) int {
	if alg == node.XXH3 || alg == 0 {
		return 3
	}
	return 4
}

const (
	markerFile = "ARBOR"
	lockFile   = "ARBOR.lock"
	markerText = "arbor store\nformat "
	// markerTemp is the temporary file fsutil.WriteFileAtomic writes the
	// marker to before renaming it: a crash while a store is created may
	// leave it behind.
	markerTemp = markerFile + ".tmp"

	prefixMeta = 'm'
	prefixNode = 'n'
	prefixBlob = 'b'
	prefixRef  = 'r'
	// prefixDelta keys nodes stored as deltas, apart from whole nodes
	// (prefixNode), so that writing a delta can never replace a whole node
	// that other deltas use as their base.
	prefixDelta = 'd'

	metaConfig = "chunker-config"
	// metaHash names the store's node.Alg (one byte); a store without it
	// predates the choice and uses node.XXH3. A second byte 1 records that
	// the creator named the hash (Options.Hash) rather than took the default.
	metaHash = "hash"
	// metaUnsettled marks a store that a bulk load left unsettled
	// (settle.go).
	metaUnsettled = "unsettled"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Chunker is the node size configuration for a new store. For an
	// existing store a non-zero Chunker must equal the stored one, or Open
	// fails with ErrConfigMismatch; the zero value accepts the stored one.
	Chunker chunker.Config
	// NoSync skips fsync on commit. Commits stay atomic (a crash shows an
	// old or new state, never a mix) but the latest ones may be lost. The
	// default, false, makes every committed Batch durable before it returns.
	NoSync bool
	// CacheSize bounds the memory of decoded nodes kept for reads, in
	// bytes. Zero means 256 MiB; negative disables the cache.
	CacheSize int64
	// PebbleCacheSize is Pebble's block cache, in bytes. Pebble charges its
	// memtables to it, so it must hold them as well as blocks. Zero means
	// DefaultPebbleCacheSize.
	PebbleCacheSize int64
	// MustExist makes Open fail instead of creating a new store.
	MustExist bool
	// SettleDelay is how long after a bulk load (an initial clone) the
	// store starts to settle it in the background (see Store.Settle).
	// Zero means one second; negative means never in the background.
	SettleDelay time.Duration
	// BulkSpillBytes is the size of a bulk load's spills (Batch.BulkLoad,
	// a Builder's batch, an initial clone): each is written as a sorted
	// sstable and ingested while the load goes on. A load holds about
	// three spills in memory (one filling, two being written), and a load
	// killed midway keeps what it ingested. Zero means 32 MiB: smaller
	// spills cost more fsyncs and compaction. Negative means the default too.
	BulkSpillBytes int
	// CheckAddresses makes ordinary batches refuse to store bytes under an
	// address that holds different bytes: Batch.PutBlob and the nodes
	// written by Apply, ApplyValues, PutNode and PutDecoded then fail with
	// ErrAddressConflict instead. xxh3 is not collision resistant, so
	// without the check crafted input could replace a stored node or blob
	// that other trees use. Servers that store content derived from
	// untrusted input set it. The cost is one existence probe (bloom
	// filtered) per node or blob an ordinary batch writes (an Apply probes
	// its writes together, in key order); the stored bytes are read only
	// when the address is already taken. Bulk loads
	// (Batch.BulkLoad, a Builder's batch) are not checked: they fill a
	// replica from a server it trusts.
	CheckAddresses bool
	// Hash is the hash algorithm that addresses a new store's nodes and
	// blobs; it cannot change afterwards. Zero means node.XXH3 for a new
	// store and accepts the stored one for an existing store; any other
	// value must equal the stored one, or Open fails with ErrConfigMismatch.
	// node.BLAKE3 makes addresses collision resistant, for stores whose
	// writers do not trust each other (DESIGN.md, threat model).
	Hash node.Alg
	// Logger receives reports of on-disk corruption (each damaged file
	// once; the store then fails every operation with an error wrapping
	// node.ErrCorrupt) and of Pebble's fatal errors. Nil means
	// slog.Default().
	Logger *slog.Logger
	// WorkingRef names the ref that Store.Write feeds through the working
	// set (working.go): a write then costs about one raw Pebble write, and
	// the tree catches up in batches. Empty: no working set (Write fails);
	// edits a crash left in one are still applied when the store opens.
	WorkingRef string
	// WorkingBytes is the size of the edits at which the working set is
	// applied in the background. Zero means 4 MiB.
	WorkingBytes int
	// WorkingDelay is how long writes must pause before a background
	// catch-up applies them; writes that keep coming wait at most ten
	// times as long (readers of the ref never wait for it: reading the ref
	// catches up). Zero means 50 ms.
	WorkingDelay time.Duration
	// WorkingGuard, if set, runs under the working set's lock before each
	// Write, which fails with its error (wrap ErrNoWorkingSet to have the
	// caller apply the write to the tree instead). A commit that moves the
	// working ref holds the same lock, so the guard sees the state the
	// write will be applied to: a partial replica's root package uses it
	// to refuse the working set once a sync has narrowed its scope.
	WorkingGuard func() error
	// Remote, if set, is shared storage that holds the nodes and blobs
	// this store lacks (a cluster server's cache; package cluster): reads
	// and existence checks fall through to it, and what they fetch is
	// kept. Nil: the store holds everything it serves.
	Remote Remote
}

// Store is a Pebble-backed store of prolly trees. It is safe for concurrent use.
type Store struct {
	dir   string
	db    *pebble.DB
	popts *pebble.Options // with defaults, for writing sstables to ingest
	lock  io.Closer       // the store lock (lock.go)
	cfg   chunker.Config
	alg   node.Alg // the hash of every address in the store
	// hashMu is held for reading by every open Batch and for writing by
	// Reinit, so a batch never mixes addresses of two hashes.
	hashMu sync.RWMutex
	// hashChosen: the store's hash was named when it was created
	// (Options.Hash), so a first sync never trades it for the server's.
	hashChosen bool
	wopts      *pebble.WriteOptions
	cache      *nodeCache
	commit     sync.Mutex // serialises ref checks and ref moves

	// refsChanged is closed, and replaced, each time a commit moves refs.
	refsMu      sync.Mutex
	refsChanged chan struct{}
	gc          sync.RWMutex // readers and batches hold R; garbage collection holds W while it marks and sweeps
	// gcRun holds one token while a GC runs, from before it takes gc until
	// its compaction ends, so that two GCs never overlap.
	gcRun chan struct{}
	// closed is closed when Close begins; it stops a GC in flight.
	closed chan struct{}
	// settler moves a bulk load's inline values to blob files (settle.go).
	settler     settler
	settleDelay time.Duration // Options.SettleDelay with its default
	bulkSpill   int           // Options.BulkSpillBytes; zero: ingestSpillBytes

	work workingSet // Options.WorkingRef's working set (working.go)

	// checkAddrs is Options.CheckAddresses; claims holds the addresses
	// that checked batches are writing (address.go).
	checkAddrs bool
	remote     Remote // Options.Remote
	// remoteWrites takes batches of entries fetched from the remote to the
	// goroutine that commits them (remote.go); remoteDone is closed when it
	// ends. Both nil without a remote.
	remoteWrites chan remoteWrite
	remoteDone   chan struct{}
	// remotePending holds the entries of queued batches until they are
	// committed, so that a read of the disk (get, readStoredNodes) finds
	// what a fetch has returned whether or not it is committed yet.
	remotePendingMu sync.Mutex
	remotePending   map[string][]byte
	claimsMu        sync.Mutex
	claims          map[claimKey]*claim

	// failure records on-disk corruption that Pebble reported (failure.go).
	failure *failure

	// Operations in flight, and whether Close has begun. Close waits for
	// the count to drain; a new operation fails once closing is set. A
	// counter (not an RWMutex) so that an operation may start others
	// inside itself while Close waits (a batch reads; GC reads refs).
	closeMu  sync.Mutex
	drained  *sync.Cond
	inflight int
	closing  bool
	metaGen  atomic.Uint64 // commits that changed application metadata

	// closeStarted: Close has begun (it applies the working set before it
	// sets closing, while the store still takes operations).
	closeStarted bool
}

// Open opens the store in dir, creating it if it does not exist (unless
// opts.MustExist). A directory that holds other files gives ErrNotStore; a
// store of a newer format gives ErrNewerFormat; a store open elsewhere gives
// ErrLocked. opts may be nil.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Chunker != (chunker.Config{}) {
		if err := o.Chunker.Validate(); err != nil {
			return nil, err
		}
	}
	if o.Hash != 0 && !o.Hash.Valid() {
		return nil, fmt.Errorf("open store %s: unknown hash algorithm %d", dir, o.Hash)
	}
	create, err := prepareDir(dir, o.MustExist)
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if create {
		err = createMarker(dir, formatFor(o.Hash))
	}
	if err == nil {
		err = upgradeMarker(dir)
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	s, err := openLocked(dir, o, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// prepareDir checks that dir is a store of a format this arbor reads, or
// (creating dir if it does not exist and !mustExist) a directory for a new
// one, which it reports as create. It changes nothing in an existing
// directory: a directory that is not a store is refused before anything
// (a lock file) is written into it.
func prepareDir(dir string, mustExist bool) (create bool, err error) {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if mustExist {
			return false, fmt.Errorf("open store %s: %w", dir, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("create store %s: %w", dir, err)
		}
	case err != nil:
		return false, fmt.Errorf("open store %s: %w", dir, err)
	}
	_, err = os.Stat(filepath.Join(dir, markerFile))
	if errors.Is(err, os.ErrNotExist) {
		// A directory holding only the lock file and the marker's
		// temporary file is one whose creation a crash cut short before
		// the marker was renamed into place: still empty.
		for _, e := range ents {
			if e.Name() != lockFile && e.Name() != markerTemp {
				return false, fmt.Errorf("open store %s: %w (it holds %s and no %s file)", dir, ErrNotStore, e.Name(), markerFile)
			}
		}
		if mustExist {
			return false, fmt.Errorf("open store %s: %w (directory is empty)", dir, ErrNotStore)
		}
		return true, nil
	}
	_, err = readMarker(dir)
	return false, err
}

// createMarker writes a new store's marker, under the store lock, before
// Pebble creates anything: atomically (a temporary file renamed into
// place), so that a crash leaves either a directory recognised as a store
// or one prepareDir still treats as empty. Writing the temporary file
// again replaces one a crash left. If another process created the store
// since prepareDir looked, its marker stays.
func createMarker(dir string, version int) error {
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err == nil {
		return nil
	}
	if err := writeMarker(dir, version); err != nil {
		return fmt.Errorf("create store %s: %w", dir, err)
	}
	return nil
}

// readMarker returns the format version in dir's marker file.
func readMarker(dir string) (int, error) {
	marker, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		return 0, fmt.Errorf("open store %s: %w", dir, err)
	}
	rest, ok := strings.CutPrefix(string(marker), markerText)
	if !ok {
		return 0, fmt.Errorf("open store %s: %w (bad %s file)", dir, ErrNotStore, markerFile)
	}
	v, err := strconv.Atoi(strings.TrimSpace(rest))
	if err != nil {
		return 0, fmt.Errorf("open store %s: %w (bad format line in %s)", dir, ErrNotStore, markerFile)
	}
	if v > FormatVersion {
		return 0, fmt.Errorf("open store %s: %w (store format %d, this arbor reads up to %d)", dir, ErrNewerFormat, v, FormatVersion)
	}
	return v, nil
}

// upgradeMarker rewrites an older store's marker with FormatVersion, under
// the store lock.
func upgradeMarker(dir string) error {
	v, err := readMarker(dir)
	if err != nil || v >= 3 {
		return err
	}
	if err := writeMarker(dir, 3); err != nil {
		return fmt.Errorf("open store %s: upgrade format %d to 3: %w", dir, v, err)
	}
	return nil
}

func writeMarker(dir string, version int) error {
	return fsutil.WriteFileAtomic(filepath.Join(dir, markerFile), []byte(markerText+strconv.Itoa(version)+"\n"), 0o644)
}

func openLocked(dir string, o Options, lock io.Closer) (*Store, error) {
	cacheSize := o.PebbleCacheSize
	if cacheSize <= 0 {
		cacheSize = DefaultPebbleCacheSize
	}
	pc := pebble.NewCache(cacheSize)
	defer pc.Unref()
	po := pebbleOptions(pc)
	fail := newFailure(dir, o.Logger)
	po.Logger = pebbleLogger{fail}
	po.EventListener = &pebble.EventListener{DataCorruption: fail.dataCorruption}
	if pebbleOptionsHook != nil {
		pebbleOptionsHook(po)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open store %s: pebble: %w", dir, dbErr(err))
	}
	nodeCache := o.CacheSize
	if nodeCache == 0 {
		nodeCache = 256 << 20
	}
	po.EnsureDefaults()
	s := &Store{dir: dir, db: db, popts: po, lock: lock, wopts: pebble.Sync, cache: newNodeCache(nodeCache),
		gcRun: make(chan struct{}, 1), closed: make(chan struct{}), failure: fail}
	s.drained = sync.NewCond(&s.closeMu)
	s.bulkSpill = o.BulkSpillBytes
	s.checkAddrs = o.CheckAddresses
	s.remote = o.Remote
	if s.remote != nil {
		s.remoteWrites = make(chan remoteWrite, remoteWriteQueue)
		s.remotePending = map[string][]byte{}
	}
	s.settleDelay = o.SettleDelay
	if s.settleDelay == 0 {
		s.settleDelay = defaultSettleDelay
	}
	removeIngestLeftovers(dir)
	if o.NoSync {
		s.wopts = pebble.NoSync
	}
	raw, err := s.getMeta(metaConfig)
	switch {
	case errors.Is(err, ErrNotFound):
		// A new store: its configuration and hash, in one batch.
		s.cfg = o.Chunker.WithDefaults()
		s.alg = cmp.Or(o.Hash, node.XXH3)
		b, _ := json.Marshal(s.cfg)
		wb := db.NewBatch()
		_ = wb.Set(metaKey(metaConfig), b, nil)
		s.hashChosen = o.Hash != 0
		_ = wb.Set(metaKey(metaHash), hashMeta(s.alg, s.hashChosen), nil)
		if err := wb.Commit(pebble.Sync); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: write config: %w", dir, err)
		}
	case err != nil:
		db.Close()
		return nil, err
	default:
		if err := json.Unmarshal(raw, &s.cfg); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w (unreadable chunker config: %v)", dir, ErrNotStore, err)
		}
		if o.Chunker != (chunker.Config{}) && o.Chunker.WithDefaults() != s.cfg {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w (store %+v, options %+v)", dir, ErrConfigMismatch, s.cfg, o.Chunker.WithDefaults())
		}
		s.alg = node.XXH3
		switch h, err := s.getMeta(metaHash); {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			db.Close()
			return nil, err
		case len(h) < 1 || len(h) > 2 || !node.Alg(h[0]).Valid():
			db.Close()
			return nil, fmt.Errorf("open store %s: %w (unknown hash algorithm %x)", dir, ErrNewerFormat, h)
		default:
			s.alg = node.Alg(h[0])
			s.hashChosen = len(h) == 2 && h[1] == 1
		}
		if o.Hash != 0 && o.Hash != s.alg {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w (store hashes with %s, options ask for %s)", dir, ErrConfigMismatch, s.alg, o.Hash)
		}
	}
	if err := s.initWorking(o); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if _, err := s.getMeta(metaUnsettled); err == nil {
		s.scheduleSettle() // a bulk load's process ended before it settled
	}
	if s.remote != nil {
		s.remoteDone = make(chan struct{})
		go s.writeRemote() // last: an Open that fails leaves no goroutine
	}
	return s, nil
}

// DefaultPebbleCacheSize is Pebble's default cache in a store: 64 MiB for
// blocks (bloom filters, indexes, data) plus the two memtables Pebble
// charges to the cache. With 64 MiB in all, the memtables took nearly all
// of it and every lookup read its filter and index blocks from the files.
const DefaultPebbleCacheSize = 64<<20 + 2*32<<20

// PebbleOptions returns the Pebble options a store uses (memtable size,
// bloom filters, quiet logger) with a new block cache of cacheBytes. Tools
// and benchmarks open their raw-Pebble baselines with it, so that both sides
// of a comparison are configured alike. The caller owns the returned cache
// reference (po.Cache.Unref after pebble.Open).
func PebbleOptions(cacheBytes int64) *pebble.Options {
	return pebbleOptions(pebble.NewCache(cacheBytes))
}

// pebbleOptions returns the Pebble options of a store with block cache pc.
// The benchmarks open their raw Pebble baseline with the same options. A
// store replaces the logger and the corruption handler with its own
// (failure.go); these log, and never end the process on corruption.
func pebbleOptions(pc *pebble.Cache) *pebble.Options {
	po := &pebble.Options{
		Cache:         pc,
		Logger:        pebbleLogger{},
		EventListener: &pebble.EventListener{DataCorruption: logCorruption},
		MemTableSize:  memTableSize,
		// Node keys are hashes, so every L0 file (a memtable flush, a bulk
		// load's spill) overlaps every other, and an L0 compaction rewrites
		// all of L0 and the level below. Point reads by hash check a file's
		// bloom filter first, so more L0 files cost reads little; the
		// default threshold of 4 made every bulk load of 100 MB or more
		// compact during the load (about 8% of an initial clone's CPU),
		// work its settle does anyway a moment later.
		L0CompactionThreshold: 8,
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Node and blob values of 256 bytes or more go to blob files, written
	// once at flush; compactions then move only keys and references. Keys
	// are hashes, so every compaction overlaps the whole key space and
	// would otherwise rewrite every node each time. A GC that finds much
	// garbage copies the live values to new blob files so that old ones
	// are freed (gc.go); Pebble rewrites blob files whose garbage passes
	// TargetGarbageRatio in the background, which covers smaller garbage.
	po.FormatMajorVersion = pebble.FormatValueSeparation
	po.Experimental.ShortAttributeExtractor = shortAttribute
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           256,
			MaxBlobReferenceDepth: 20,
			RewriteMinimumAge:     time.Second,
			TargetGarbageRatio:    0.25,
		}
	}
	return po
}

// shortAttribute is what Pebble keeps of a node or blob value beside the
// reference to it when it moves the value to a blob file: enough for GC's
// sweep to order the deletion of a dead record without reading the value
// back (see deleteRank). For a node or delta record it is the node's level
// plus one, or 7 for level 6 and above (read the value for the level); for
// a blob, 1 for a value index and 2 for a chunk. 0, as on values separated
// before Arbor set attributes, means unknown.
func shortAttribute(key []byte, _ int, value []byte) (pebble.ShortAttribute, error) {
	if len(key) == 0 || len(value) < 2 {
		return 0, nil
	}
	switch key[0] {
	case prefixNode, prefixDelta:
		return pebble.ShortAttribute(min(int(value[1]), 6) + 1), nil
	case prefixBlob:
		if _, _, err := node.DecodeValueIndex(node.Alg(value[0]), value); len(value) > 0 && err == nil {
			return 1, nil
		}
		return 2, nil
	}
	return 0, nil
}

// pebbleOptionsHook, set by tests, adjusts the Pebble options of the
// stores they open.
var pebbleOptionsHook func(*pebble.Options)

// memTableSize is Pebble's memtable size. Pebble keeps up to three spent
// write-ahead logs of about this size for reuse, which counts in a small
// store's disk use; deltas keep applied batches small enough for 32 MiB.
var memTableSize uint64 = 32 << 20

// Close flushes and closes the store. It waits for operations in flight,
// including open batches (which must end in Commit or Discard); new
// operations fail with ErrClosed from the moment Close is called, so a
// batch still being filled fails fast and can be discarded. A GC in
// flight stops at its next check and returns an error wrapping ErrClosed.
// Further calls to Close fail with ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closing || s.closeStarted {
		s.closeMu.Unlock()
		return ErrClosed
	}
	s.closeStarted = true
	s.closeMu.Unlock()
	// Apply what the working set holds (durable already: only to spare
	// the next Open the work), while the store still takes operations.
	werr := s.closeWorking()
	s.closeMu.Lock()
	s.closing = true
	close(s.closed) // a GC or settle in flight stops (either is safe cut short), so this wait is short
	s.stopSettle()
	for s.inflight > 0 {
		s.drained.Wait()
	}
	s.closeMu.Unlock()
	s.stopRemoteWriter()
	s.announceRefs() // wake followers: their next read fails with ErrClosed
	err := s.db.Close()
	s.lock.Close()
	if err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	if werr != nil {
		return fmt.Errorf("close store %s: apply the working set (kept for the next open): %w", s.dir, werr)
	}
	return nil
}

// RefsChanged returns a channel that is closed when a later commit moves
// any ref, or when the store closes. To follow a ref without missing a
// move, take the channel first, then read the ref, then wait on the
// channel.
func (s *Store) RefsChanged() <-chan struct{} {
	s.refsMu.Lock()
	defer s.refsMu.Unlock()
	if s.refsChanged == nil {
		s.refsChanged = make(chan struct{})
	}
	return s.refsChanged
}

func (s *Store) announceRefs() {
	s.refsMu.Lock()
	if s.refsChanged != nil {
		close(s.refsChanged)
		s.refsChanged = nil
	}
	s.refsMu.Unlock()
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Config returns the store's chunker configuration.
func (s *Store) Config() chunker.Config { return s.cfg }

// Hash returns the algorithm that addresses the store's nodes and blobs.
func (s *Store) Hash() node.Alg { return s.alg }

// EmptyRoot returns the root of the empty tree in this store's hash.
func (s *Store) EmptyRoot() node.Hash { return node.EmptyRoot(s.alg) }

// Synced reports whether commits are fsynced (Options.NoSync unset).
func (s *Store) Synced() bool { return s.wopts.Sync }

// use marks the start of an operation that needs the Pebble handle; it
// fails once the store is closed, or once Pebble found it corrupt. The
// returned func ends the operation.
func (s *Store) use() (func(), error) {
	if err := s.failure.get(); err != nil {
		return nil, fmt.Errorf("store %s: %w", s.dir, err)
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closing {
		return nil, fmt.Errorf("store %s: %w", s.dir, ErrClosed)
	}
	s.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.closeMu.Lock()
			if s.inflight--; s.inflight == 0 {
				s.drained.Broadcast()
			}
			s.closeMu.Unlock()
		})
	}, nil
}

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }
func refKey(name string) []byte  { return append([]byte{prefixRef}, name...) }

// Keys of stored addresses: a prefix, then the hash in its own width.
func nodeKey(h node.Hash) []byte  { return h.Alg().Append([]byte{prefixNode}, h) }
func deltaKey(h node.Hash) []byte { return h.Alg().Append([]byte{prefixDelta}, h) }
func blobKey(h node.Hash) []byte  { return h.Alg().Append([]byte{prefixBlob}, h) }

func (s *Store) get(key []byte) ([]byte, error) {
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	// Queued fetched entries first: one leaves the queue only once
	// committed, so a miss there and then in Pebble is a real miss.
	if raw, ok := s.pendingRemote(key); ok {
		return raw, nil
	}
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, dbErr(err)
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, nil
}

func (s *Store) getMeta(name string) ([]byte, error) {
	v, err := s.get(metaKey(name))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("store %s: read meta %q: %w", s.dir, name, err)
	}
	return v, err
}

// MetaGeneration counts the commits that changed application metadata
// (SetMeta, DeleteMeta) since the store opened; it moves after each such
// commit, so a value cached with the generation read before it is stale
// once the generation differs.
func (s *Store) MetaGeneration() uint64 { return s.metaGen.Load() }

// Meta returns the application metadata value stored under name, or an
// error wrapping ErrNotFound.
func (s *Store) Meta(name string) ([]byte, error) { return s.getMeta("app/" + name) }

// Ref returns the root that ref name points at. ok is false if the ref is
// unset. Reading the working ref first applies the working set, so the
// root covers every acknowledged write.
func (s *Store) Ref(name string) (h node.Hash, ok bool, err error) {
	if name == s.work.ref && s.pendingWork() {
		if err := s.CatchUp(context.Background()); err != nil {
			return h, false, fmt.Errorf("store %s: ref %q: apply the working set: %w", s.dir, name, err)
		}
	}
	return s.rawRef(name)
}

// rawRef reads ref name as stored, without applying the working set.
func (s *Store) rawRef(name string) (h node.Hash, ok bool, err error) {
	v, err := s.get(refKey(name))
	if errors.Is(err, ErrNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("store %s: read ref %q: %w", s.dir, name, err)
	}
	h, ok = s.alg.HashOf(v)
	if !ok || h.IsZero() {
		return h, false, fmt.Errorf("store %s: ref %q: %w (%d-byte value)", s.dir, name, node.ErrCorrupt, len(v))
	}
	return h, true, nil
}

// Root returns the root that ref name points at, or the empty tree's root
// if the ref is unset.
func (s *Store) Root(name string) (node.Hash, error) {
	h, ok, err := s.Ref(name)
	if err != nil || ok {
		return h, err
	}
	return s.EmptyRoot(), nil
}

// Refs returns every ref and the root it names.
func (s *Store) Refs() (map[string]node.Hash, error) {
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRef}, UpperBound: []byte{prefixRef + 1}})
	if err != nil {
		return nil, dbErr(err)
	}
	defer it.Close()
	out := map[string]node.Hash{}
	for it.First(); it.Valid(); it.Next() {
		h, ok := s.alg.HashOf(it.Value())
		if !ok || h.IsZero() {
			return nil, fmt.Errorf("store %s: ref %q: %w", s.dir, it.Key()[1:], node.ErrCorrupt)
		}
		out[string(it.Key()[1:])] = h
	}
	return out, dbErr(it.Error())
}

// Node returns the node with hash h. The empty tree's root is always present.
// Malformed stored bytes, and stored or rebuilt bytes that do not hash to h,
// give an error wrapping node.ErrCorrupt; a missing node wraps
// node.ErrNotFound. Every node read from disk is hashed (decoding does it);
// cached nodes were hashed when they were read or written.
func (s *Store) Node(ctx context.Context, h node.Hash) (*node.Node, error) {
	return s.node(ctx, h, true)
}

// node reads node h, rebuilding it from a delta if it is stored as one and
// allowDelta (a delta's base must be stored whole).
func (s *Store) node(ctx context.Context, h node.Hash, allowDelta bool) (*node.Node, error) {
	if e := s.cache.entry(h); e.n != nil && (allowDelta || e.delta == nil) {
		return e.n, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gen := s.cache.generation()
	raw := node.EmptyLeaf(s.alg)
	if h != s.EmptyRoot() {
		var err error
		raw, err = s.readStoredNode(h)
		if errors.Is(err, ErrNotFound) && s.remote != nil {
			var raws [][]byte
			if raws, err = s.fetchRemote(ctx, false, []node.Hash{h}); err != nil {
				return nil, err
			}
			if raw = raws[0]; raw == nil {
				err = ErrNotFound
			}
		}
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("store %s: node %s: %w", s.dir, h, node.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("store %s: read node %s: %w", s.dir, h, err)
		}
	}
	return s.finishNode(ctx, h, raw, gen, allowDelta)
}

// finishNode turns node h's stored bytes raw (whole or a delta) into the
// verified node, and caches it if the cache is still at generation gen.
func (s *Store) finishNode(ctx context.Context, h node.Hash, raw []byte, gen uint64, allowDelta bool) (*node.Node, error) {
	var stored []byte
	if isDelta(raw) {
		if !allowDelta {
			return nil, fmt.Errorf("store %s: node %s: %w: a delta base stored as a delta", s.dir, h, node.ErrCorrupt)
		}
		stored = raw
		var err error
		if raw, err = s.undelta(ctx, h, raw); err != nil {
			return nil, err
		}
	}
	n, err := node.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("store %s: node %s: %w", s.dir, h, err)
	}
	if got := n.Hash(); got != h {
		// Pebble checksums its blocks, so this is a node written under
		// the wrong key (or a bug), not bit rot: never serve it as h.
		return nil, fmt.Errorf("store %s: node %s: %w: stored bytes hash to %s", s.dir, h, node.ErrCorrupt, got)
	}
	s.cache.addIfGen(h, cached{n: n, delta: stored}, gen)
	return n, nil
}

// readStoredNode returns node h's stored bytes: the whole node if it is
// stored whole, else its delta.
func (s *Store) readStoredNode(h node.Hash) ([]byte, error) {
	raw, err := s.get(nodeKey(h))
	if errors.Is(err, ErrNotFound) {
		raw, err = s.get(deltaKey(h))
	}
	return raw, err
}

// undelta rebuilds node h from its stored delta and checks its hash. When
// the base is gone, garbage collection has just rewritten h whole (it does
// so before deleting a base), so h is read again.
func (s *Store) undelta(ctx context.Context, h node.Hash, stored []byte) ([]byte, error) {
	d, err := decodeDelta(s.alg, stored)
	if err != nil {
		return nil, fmt.Errorf("store %s: node %s: %w", s.dir, h, err)
	}
	base, err := s.node(ctx, d.base, false)
	if errors.Is(err, node.ErrNotFound) {
		again, gerr := s.get(nodeKey(h))
		if gerr == nil && !isDelta(again) && s.alg.Sum(again) == h {
			return again, nil
		}
		return nil, fmt.Errorf("store %s: node %s: delta base %s: %w", s.dir, h, d.base, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: node %s: delta base: %w", s.dir, h, err)
	}
	raw, err := applyDelta(base, d)
	if err != nil {
		return nil, fmt.Errorf("store %s: node %s: %w", s.dir, h, err)
	}
	if got := s.alg.Sum(raw); got != h {
		return nil, fmt.Errorf("store %s: node %s: %w: delta rebuilds a node hashing to %s", s.dir, h, node.ErrCorrupt, got)
	}
	return raw, nil
}

// Nodes implements node.Source.
//
// The nodes the cache does not hold are read with one Pebble iterator, in
// key order: a Get per node would build a fresh iterator each time, which
// costs more than the read when a diff or sync asks for thousands.
func (s *Store) Nodes(ctx context.Context, hashes []node.Hash) ([]*node.Node, error) {
	out := make([]*node.Node, len(hashes))
	var miss []int
	for i, h := range hashes {
		if e := s.cache.entry(h); e.n != nil {
			out[i] = e.n
		} else if h == s.EmptyRoot() {
			n, err := s.Node(ctx, h)
			if err != nil {
				return nil, err
			}
			out[i] = n
		} else {
			miss = append(miss, i)
		}
	}
	if len(miss) == 0 {
		return out, nil
	}
	if len(miss) == 1 {
		n, err := s.Node(ctx, hashes[miss[0]])
		out[miss[0]] = n
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gen := s.cache.generation()
	raws, err := s.readStoredNodes(hashes, miss)
	if err != nil {
		return nil, err
	}
	if s.remote != nil {
		var ask []node.Hash
		var at []int
		for j, raw := range raws {
			if raw == nil {
				ask, at = append(ask, hashes[miss[j]]), append(at, j)
			}
		}
		if len(ask) > 0 {
			got, err := s.fetchRemote(ctx, false, ask)
			if err != nil {
				return nil, err
			}
			for k, j := range at {
				raws[j] = got[k]
			}
		}
	}
	for j, i := range miss {
		if raws[j] == nil {
			return nil, fmt.Errorf("store %s: node %s: %w", s.dir, hashes[i], node.ErrNotFound)
		}
		n, err := s.finishNode(ctx, hashes[i], raws[j], gen, true)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// readStoredNodes returns the stored bytes (whole or delta; nil if absent)
// of the nodes hashes[miss[j]], read with one iterator in key order.
func (s *Store) readStoredNodes(hashes []node.Hash, miss []int) ([][]byte, error) {
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	order := make([]int, len(miss)) // positions in miss, by hash
	for j := range order {
		order[j] = j
	}
	slices.SortFunc(order, func(a, b int) int { return hashes[miss[a]].Compare(hashes[miss[b]]) })
	// Queued fetched entries are taken before the iterator opens: one
	// that leaves the queue meanwhile is committed, and the iterator sees it.
	var pending map[int][]byte
	if s.remote != nil {
		for j, i := range miss {
			if raw, ok := s.pendingRemote(nodeKey(hashes[i])); ok {
				if pending == nil {
					pending = map[int][]byte{}
				}
				pending[j] = raw
			}
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return nil, dbErr(err)
	}
	raws := make([][]byte, len(miss))
	key := make([]byte, 0, 1+node.MaxHashSize)
	read := func(j int, prefix byte) (bool, error) {
		h := hashes[miss[j]]
		key = h.Alg().Append(append(key[:0], prefix), h)
		if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
			return false, nil
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return false, fmt.Errorf("store %s: read node %s: %w", s.dir, h, dbErr(err))
		}
		raws[j] = bytes.Clone(v)
		return true, nil
	}
	var deltas []int
	for _, j := range order {
		ok, err := read(j, prefixNode)
		if err != nil {
			it.Close()
			return nil, err
		}
		if !ok {
			deltas = append(deltas, j)
		}
	}
	for _, j := range deltas { // still in key order
		if _, err := read(j, prefixDelta); err != nil {
			it.Close()
			return nil, err
		}
	}
	if err := it.Close(); err != nil {
		return nil, dbErr(err)
	}
	for j, raw := range pending {
		if raws[j] == nil {
			raws[j] = raw
		}
	}
	return raws, nil
}

// HoldsNodes reports whether the store holds any node at all, whole or as a
// delta. A walk into a store that holds none (an initial clone) need not
// ask which of a node's children it holds.
func (s *Store) HoldsNodes() (bool, error) {
	done, err := s.use()
	if err != nil {
		return false, err
	}
	defer done()
	for _, p := range []byte{prefixNode, prefixDelta} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			return false, dbErr(err)
		}
		found := it.First()
		if err := it.Close(); err != nil {
			return false, dbErr(err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// HasNode reports whether the node with hash h is stored.
func (s *Store) HasNode(h node.Hash) (bool, error) {
	if h == s.EmptyRoot() || s.cache.get(h) != nil {
		return true, nil
	}
	held, err := s.HasNodes([]node.Hash{h}) // one iterator for both forms
	if err != nil {
		return false, err
	}
	return held[0], nil
}

// HasNodes reports, for each hash, whether that node is stored. It reads
// the store once (one iterator, seeks in key order), which for many hashes
// costs far less than as many HasNode calls.
func (s *Store) HasNodes(hs []node.Hash) ([]bool, error) {
	out := make([]bool, len(hs))
	var ask []int
	for i, h := range hs {
		if h == s.EmptyRoot() || s.cache.has(h) {
			out[i] = true
		} else {
			ask = append(ask, i)
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	slices.SortFunc(ask, func(a, b int) int { return hs[a].Compare(hs[b]) })
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return nil, dbErr(err)
	}
	key := make([]byte, 0, 1+node.MaxHashSize)
	for _, i := range ask {
		key = hs[i].Alg().Append(append(key[:0], prefixNode), hs[i])
		out[i] = it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key)
	}
	// Then the ones not stored whole, as deltas.
	for _, i := range ask {
		if !out[i] {
			key = hs[i].Alg().Append(append(key[:0], prefixDelta), hs[i])
			out[i] = it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key)
		}
	}
	if err := it.Close(); err != nil {
		return nil, dbErr(err)
	}
	if s.remote != nil {
		if err := s.remoteHas(context.Background(), false, hs, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// HasBlob reports whether the value blob with hash h is stored (or, in a
// store with a Remote, held there).
func (s *Store) HasBlob(h node.Hash) (bool, error) {
	ok, err := s.has(blobKey(h))
	if err != nil || ok || s.remote == nil {
		return ok, err
	}
	out := []bool{false}
	err = s.remoteHas(context.Background(), true, []node.Hash{h}, out)
	return out[0], err
}

func (s *Store) has(key []byte) (bool, error) {
	done, err := s.use()
	if err != nil {
		return false, err
	}
	defer done()
	// An iterator, not Get: Get would fetch the value, which for a node or
	// blob means a read from a blob file (value separation). SeekPrefixGE
	// consults the bloom filters, so absent keys rarely touch disk.
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return false, dbErr(err)
	}
	found := it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key)
	if err := it.Close(); err != nil {
		return false, dbErr(err)
	}
	return found, nil
}

// Blob returns the value blob (a value chunk or a value index) with hash h,
// verified against h.
func (s *Store) Blob(ctx context.Context, h node.Hash) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := s.get(blobKey(h))
	if errors.Is(err, ErrNotFound) && s.remote != nil {
		var raws [][]byte
		if raws, err = s.fetchRemote(ctx, true, []node.Hash{h}); err != nil {
			return nil, err
		}
		if b = raws[0]; b == nil {
			err = ErrNotFound
		}
	}
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("store %s: blob %s: %w", s.dir, h, node.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: read blob %s: %w", s.dir, h, err)
	}
	if got := s.alg.Sum(b); got != h {
		return nil, fmt.Errorf("store %s: blob %s: %w (bytes hash to %s)", s.dir, h, node.ErrCorrupt, got)
	}
	return b, nil
}

// ReadValue returns the bytes of a stored value, fetching and verifying the
// chunks of an out-of-line value.
func (s *Store) ReadValue(ctx context.Context, v node.Value) ([]byte, error) {
	if !v.IsRef {
		return v.Inline, nil
	}
	idx, err := s.Blob(ctx, v.Ref)
	if err != nil {
		return nil, err
	}
	chunks, total, err := node.DecodeValueIndex(s.alg, idx)
	if err != nil {
		return nil, fmt.Errorf("store %s: value index %s: %w", s.dir, v.Ref, err)
	}
	if total != v.Size {
		return nil, fmt.Errorf("store %s: value index %s: %w (describes %d bytes, leaf says %d)", s.dir, v.Ref, node.ErrCorrupt, total, v.Size)
	}
	out := make([]byte, 0, total)
	for _, c := range chunks {
		b, err := s.Blob(ctx, c.Hash)
		if err != nil {
			return nil, err
		}
		if len(b) != int(c.Size) {
			return nil, fmt.Errorf("store %s: chunk %s: %w (size %d, index says %d)", s.dir, c.Hash, node.ErrCorrupt, len(b), c.Size)
		}
		out = append(out, b...)
	}
	return out, nil
}

// OpenValue returns a reader over a stored value that fetches an
// out-of-line value's chunks one at a time, so a large value is never held
// whole in memory.
func (s *Store) OpenValue(ctx context.Context, v node.Value) (io.Reader, error) {
	if !v.IsRef {
		return bytes.NewReader(v.Inline), nil
	}
	idx, err := s.Blob(ctx, v.Ref)
	if err != nil {
		return nil, err
	}
	chunks, _, err := node.DecodeValueIndex(s.alg, idx)
	if err != nil {
		return nil, fmt.Errorf("store %s: value index %s: %w", s.dir, v.Ref, err)
	}
	return &valueReader{ctx: ctx, s: s, chunks: chunks}, nil
}

type valueReader struct {
	ctx    context.Context
	s      *Store
	chunks []node.Chunk
	cur    []byte
}

func (r *valueReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if len(r.chunks) == 0 {
			return 0, io.EOF
		}
		b, err := r.s.Blob(r.ctx, r.chunks[0].Hash)
		if err != nil {
			return 0, err
		}
		r.cur, r.chunks = b, r.chunks[1:]
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// hashMeta is the metaHash value: the algorithm, and 1 if it was chosen.
func hashMeta(alg node.Alg, chosen bool) []byte {
	if chosen {
		return []byte{byte(alg), 1}
	}
	return []byte{byte(alg)}
}

// HashChosen reports whether the store's hash was named when it was
// created (Options.Hash), rather than taken by default: Reinit then keeps
// it.
func (s *Store) HashChosen() bool { return s.hashChosen }

// Reinit gives a store that holds nothing yet (no ref, node, blob or
// pending write) another chunker configuration and hash: a replica's first
// sync takes its server's. A store that holds data or has a batch open, or
// whose hash was chosen at creation and differs from alg, gives
// ErrConfigMismatch.
func (s *Store) Reinit(cfg chunker.Config, alg node.Alg) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("store %s: %w", s.dir, err)
	}
	if !alg.Valid() {
		return fmt.Errorf("store %s: unknown hash algorithm %d", s.dir, alg)
	}
	if cfg == s.cfg && alg == s.alg {
		return nil
	}
	if alg != s.alg && s.hashChosen {
		return fmt.Errorf("store %s: %w (it was created to hash with %s, not %s)", s.dir, ErrConfigMismatch, s.alg, alg)
	}
	done, err := s.use()
	if err != nil {
		return err
	}
	defer done()
	// Not Lock: the caller may hold an open batch itself (a write that
	// started a sync), and a write in flight is data the store will hold.
	if !s.hashMu.TryLock() {
		return fmt.Errorf("store %s: %w (a write is in flight: it keeps its %s and %+v)", s.dir, ErrConfigMismatch, s.alg, s.cfg)
	}
	defer s.hashMu.Unlock()
	s.commit.Lock()
	defer s.commit.Unlock()
	if s.pendingWork() {
		return fmt.Errorf("store %s: %w (it holds writes: it keeps its %s and %+v)", s.dir, ErrConfigMismatch, s.alg, s.cfg)
	}
	for _, p := range []byte{prefixRef, prefixNode, prefixBlob, prefixDelta, prefixWork} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			return dbErr(err)
		}
		any := it.First()
		if err := it.Close(); err != nil {
			return dbErr(err)
		}
		if any {
			return fmt.Errorf("store %s: %w (it holds data: it keeps its %s and %+v)", s.dir, ErrConfigMismatch, s.alg, s.cfg)
		}
	}
	// The marker first: a crash after it leaves an empty store an older
	// arbor refuses, never blake3 nodes under an xxh3 marker.
	if v := formatFor(alg); v > formatFor(s.alg) {
		if err := writeMarker(s.dir, v); err != nil {
			return fmt.Errorf("store %s: %w", s.dir, err)
		}
	}
	b, _ := json.Marshal(cfg)
	wb := s.db.NewBatch()
	_ = wb.Set(metaKey(metaConfig), b, nil)
	_ = wb.Set(metaKey(metaHash), hashMeta(alg, false), nil)
	if err := wb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store %s: write config: %w", s.dir, dbErr(err))
	}
	s.cfg, s.alg = cfg, alg
	s.cache.invalidate() // it may hold the old hash's empty leaf
	return nil
}
