package arbor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/arbor-sync/arbor/chunker"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

// Hash is a tree root (or node) hash under its store's HashAlg: xxh3-128
// (32 hex digits) or blake3-256 (64).
type Hash = node.Hash

// HashAlg is the hash function that addresses a store's nodes, chosen when
// the store is created (Options.Hash).
type HashAlg = node.Alg

// The hash algorithms a store may use.
const (
	// XXH3 is xxh3-128, the default: the fastest, and the right choice when
	// every writer of the server is trusted. Anyone who chooses the bytes
	// can build two contents with one xxh3 address.
	XXH3 = node.XXH3
	// BLAKE3 is BLAKE3-256, a cryptographic hash: equal roots then mean
	// equal records even between parties that do not trust each other.
	BLAKE3 = node.BLAKE3
)

// ParseHashAlg parses "xxh3" or "blake3".
func ParseHashAlg(s string) (HashAlg, error) { return node.ParseAlg(s) }

// ParseHash parses 32 (xxh3-128) or 64 (blake3-256) hex digits.
func ParseHash(s string) (Hash, error) { return node.ParseHash(s) }

// EmptyRoot returns the root hash of a store with no records under alg.
func EmptyRoot(alg HashAlg) Hash { return node.EmptyRoot(alg) }

// HeadRef names the ref that holds a store's current tree.
const HeadRef = "head"

// Sentinel errors.
var (
	// ErrNotFound reports a key the store does not hold.
	ErrNotFound = tree.ErrNotFound
	// ErrClosed reports use of a closed DB.
	ErrClosed = tree.ErrClosed
	// ErrLocked reports a store directory already opened by another process.
	ErrLocked = tree.ErrLocked
	// ErrNotStore reports a directory that is not an Arbor store.
	ErrNotStore = tree.ErrNotStore
	// ErrCorrupt reports a node or value whose bytes are damaged.
	ErrCorrupt = node.ErrCorrupt
	// ErrVerify reports a tree that failed verification.
	ErrVerify = tree.ErrVerify
	// ErrConfigMismatch reports stores with different chunker
	// configurations, whose roots can never be compared.
	ErrConfigMismatch = tree.ErrConfigMismatch
	// ErrBadInput reports malformed import input.
	ErrBadInput = errors.New("bad input")
)

// Options configure Open. The zero value is usable.
type Options struct {
	// NoSync skips fsync on commit: faster writes that stay atomic but may
	// lose the latest commits in a power failure. Default: every commit is
	// durable when it returns.
	NoSync bool
	// CacheSize bounds decoded nodes kept in memory, in bytes (default 256 MiB).
	CacheSize int64
	// Chunker sets the target node size of a new store; zero uses defaults.
	Chunker chunker.Config
	// MustExist makes Open fail if dir holds no store, instead of creating one.
	MustExist bool
	// Hash is the hash of a new store (zero: XXH3). An existing store keeps
	// its own; a different non-zero Hash fails with ErrConfigMismatch. A
	// replica's first sync gives an empty store its server's hash.
	Hash HashAlg
}

// DB is an open Arbor store. It is safe for concurrent use.
type DB struct {
	store *tree.Store
	scope atomic.Pointer[scope.Scope] // cached stored scope; nil: not loaded
}

// Open opens (creating if needed) the store in dir. opts may be nil.
func Open(dir string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	var s *tree.Store
	s, err := tree.Open(dir, &tree.Options{Chunker: o.Chunker, NoSync: o.NoSync, CacheSize: o.CacheSize, MustExist: o.MustExist, Hash: o.Hash,
		WorkingRef: HeadRef, WorkingGuard: fullReplicaGuard(&s)})
	if err != nil {
		return nil, err
	}
	removeImportRuns(dir) // an import's sort runs that a crash left behind
	return &DB{store: s}, nil
}

// Close closes the store.
func (db *DB) Close() error { return db.store.Close() }

// Hash returns the store's hash algorithm.
func (db *DB) Hash() HashAlg { return db.store.Hash() }

// EmptyRoot returns the root of this store with no records.
func (db *DB) EmptyRoot() Hash { return db.store.EmptyRoot() }

// Store returns the underlying tree store, for lower-level access.
func (db *DB) Store() *tree.Store { return db.store }

// Dir returns the store's directory.
func (db *DB) Dir() string { return db.store.Dir() }

// Root returns the root hash of the current tree.
func (db *DB) Root(ctx context.Context) (Hash, error) { return db.store.Root(HeadRef) }

// Count returns the number of records.
//
// On a partial replica it counts the records in its scope, from the
// subtree counts of the nodes along the scope's edges.
func (db *DB) Count(ctx context.Context) (uint64, error) {
	sc, err := db.Scope()
	if err != nil {
		return 0, err
	}
	root, err := db.Root(ctx)
	if err != nil {
		return 0, err
	}
	if sc.IsAll() {
		return db.store.Count(ctx, root)
	}
	var n uint64
	for _, r := range sc.Ranges() {
		c, err := db.store.CountRange(ctx, root, r)
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// Get returns key's value, or an error wrapping ErrNotFound.
//
// On a partial replica a key outside its scope gives an error wrapping
// ErrOutOfScope: the replica does not know that key's value.
func (db *DB) Get(ctx context.Context, key []byte) ([]byte, error) {
	sc, err := db.Scope()
	if err != nil {
		return nil, err
	}
	if err := sc.Check(key); err != nil {
		return nil, fmt.Errorf("read refused on a partial replica: %w", err)
	}
	// The working set first, then the tree at head, without making the
	// tree catch up.
	return db.store.Lookup(ctx, HeadRef, key)
}

// Put sets key to value, durably unless Options.NoSync.
func (db *DB) Put(ctx context.Context, key, value []byte) error {
	return db.Apply(ctx, new(Batch).Put(key, value))
}

// Delete removes key. Deleting a missing key is not an error.
func (db *DB) Delete(ctx context.Context, key []byte) error {
	return db.Apply(ctx, new(Batch).Delete(key))
}

// Batch collects writes that Apply commits atomically. The zero Batch is
// empty and ready to use. Later writes to a key override earlier ones.
type Batch struct {
	edits []tree.Edit
}

// Put adds a write of key = value. The slices are retained until Apply.
func (b *Batch) Put(key, value []byte) *Batch {
	b.edits = append(b.edits, tree.Edit{Key: key, Value: value})
	return b
}

// Delete adds a deletion of key.
func (b *Batch) Delete(key []byte) *Batch {
	b.edits = append(b.edits, tree.Edit{Key: key, Delete: true})
	return b
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.edits) }

// fullReplica declines the working set on a partial replica, reading the
// stored scope itself rather than a DB's cached one: the guard runs under
// the working set's lock, which the sync commit that narrows a scope also
// holds, so a write can never be acknowledged into a working set that the
// narrowed tree cannot take.
func fullReplica(s *tree.Store) error {
	sc, err := arbornet.StoredScope(s)
	if err != nil {
		return err
	}
	if !sc.IsAll() {
		return fmt.Errorf("partial replica: %w", tree.ErrNoWorkingSet)
	}
	return nil
}

// fullReplicaGuard is fullReplica with its answer kept until the store's
// metadata changes (the guard runs serialised, under the working set's lock).
func fullReplicaGuard(s **tree.Store) func() error {
	var gen uint64
	var known bool
	var answer error
	return func() error {
		g := (*s).MetaGeneration()
		if known && g == gen {
			return answer
		}
		err := fullReplica(*s)
		if err != nil && !errors.Is(err, tree.ErrNoWorkingSet) {
			return err // not kept: an I/O error may pass
		}
		gen, known, answer = g, true, err
		return err
	}
}

// workingMaxEdits is the largest batch Apply records in the store's working
// set; a larger one is applied to the tree at once.
const workingMaxEdits = 16384

// Apply commits the batch atomically: after a crash the store shows all of
// it or none of it. A batch of up to 16 384 writes (a Put or Delete is one)
// costs about one raw Pebble write: it is recorded in the store's working
// set, durable when Apply returns (unless Options.NoSync) and visible to
// every read at once, and the tree catches up in batches, in the background
// and whenever a root is needed (Root, Count, iterators, Diff, Sync,
// Verify). On a partial replica every batch is applied to the tree at once,
// since only applying it shows whether it needs a node outside the scope.
func (db *DB) Apply(ctx context.Context, b *Batch) error {
	if b == nil || len(b.edits) == 0 {
		return nil
	}
	sc, err := db.Scope()
	if err != nil {
		return err
	}
	if !sc.IsAll() {
		for _, e := range b.edits {
			if err := sc.Check(e.Key); err != nil {
				return fmt.Errorf("write refused on a partial replica: %w", err)
			}
		}
	}
	if sc.IsAll() && len(b.edits) <= workingMaxEdits {
		err := db.store.Write(ctx, b.edits)
		if !errors.Is(err, tree.ErrNoWorkingSet) {
			return err
		}
		// A sync narrowed the replica since the scope was cached: check
		// against the stored scope and apply to the tree.
		db.scope.Store(nil)
		if sc, err = db.Scope(); err != nil {
			return err
		}
		for _, e := range b.edits {
			if err := sc.Check(e.Key); err != nil {
				return fmt.Errorf("write refused on a partial replica: %w", err)
			}
		}
	}
	_, err = db.store.Update(ctx, HeadRef, b.edits)
	if err != nil && !sc.IsAll() && (errors.Is(err, node.ErrNotFound) || errors.Is(err, tree.ErrNotFound)) {
		// Re-chunking next to the scope's edge can need a node outside it,
		// which a partial replica does not hold: nothing was written.
		return fmt.Errorf("write on a partial replica (scope %s) needs a node outside the scope; nothing was written; widen the scope by a few keys: %w", sc, err)
	}
	return err
}

// Range selects keys for iteration and export. Prefix, if set, is combined
// with Start and End (the intersection is used).
type Range struct {
	Prefix     []byte
	Start, End []byte // [Start, End); nil is unbounded
}

func (r Range) treeRange() tree.Range {
	tr := tree.Range{Start: r.Start, End: r.End}
	if r.Prefix != nil {
		p := tree.PrefixRange(r.Prefix)
		if tr.Start == nil || bytes.Compare(p.Start, tr.Start) > 0 {
			tr.Start = p.Start
		}
		if p.End != nil && (tr.End == nil || bytes.Compare(p.End, tr.End) < 0) {
			tr.End = p.End
		}
	}
	return tr
}

// Iterator walks records in ascending key order over one snapshot.
type Iterator struct {
	ctx     context.Context
	db      *DB
	root    Hash
	ranges  []tree.Range // what is left to iterate, in key order
	it      *tree.Iterator
	err     error
	val     []byte
	release func()
}

// NewIterator iterates the records in r of the current tree. Call Next
// before the first record and Close at the end. On a partial replica only
// the part of r inside its scope is iterated.
func (db *DB) NewIterator(ctx context.Context, r Range) *Iterator {
	sc, err := db.Scope()
	if err != nil {
		return &Iterator{err: err}
	}
	release := db.store.PreventGC() // see Get; held until Close
	root, err := db.Root(ctx)
	if err != nil {
		release()
		return &Iterator{err: err}
	}
	ranges := []tree.Range{r.treeRange()}
	if !sc.IsAll() {
		ranges = scope.New(ranges...).Intersect(sc).Ranges()
	}
	return &Iterator{ctx: ctx, db: db, root: root, ranges: ranges, release: release}
}

// Next advances and reports whether there is a record.
func (it *Iterator) Next() bool {
	for it.err == nil {
		if it.it == nil {
			if len(it.ranges) == 0 {
				return false
			}
			it.it = it.db.store.NewIterator(it.ctx, it.root, it.ranges[0])
			it.ranges = it.ranges[1:]
		}
		if it.it.Next() {
			it.val, it.err = it.db.store.ReadValue(it.ctx, it.it.Value())
			return it.err == nil
		}
		it.err = it.it.Close()
		it.it = nil
	}
	return false
}

// Key returns the current key; valid until Close.
func (it *Iterator) Key() []byte { return it.it.Key() }

// Value returns the current value; valid until the next call to Next.
func (it *Iterator) Value() []byte { return it.val }

// Err returns the error that ended the iteration, if any.
func (it *Iterator) Err() error {
	if it.err != nil {
		return it.err
	}
	if it.it != nil {
		return it.it.Err()
	}
	return nil
}

// Close releases the iterator and returns Err.
func (it *Iterator) Close() error {
	if it.it != nil {
		if err := it.it.Close(); it.err == nil {
			it.err = err
		}
		it.it = nil
	}
	if it.release != nil {
		it.release()
		it.release = nil
	}
	return it.err
}

// VerifyReport is the result of Verify.
type VerifyReport = tree.VerifyReport

// Verify re-hashes every node and value blob reachable from the current
// root. It returns an error wrapping ErrVerify that names the first problem
// if anything is missing or corrupt; the report lists them all.
//
// On a partial replica (a store synced with SyncOptions.Scope, or under a
// token with a read scope) it checks the last synced server root instead,
// pruned to the replica's scope (tree.Store.VerifyScope): every node whose
// key interval overlaps the scope must be present and hash correctly up to
// that root, which proves the records held in scope are exactly the
// server's; then the current root likewise. The error names the scope.
func (db *DB) Verify(ctx context.Context) (*VerifyReport, error) {
	root, err := db.Root(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := db.Scope()
	if err != nil {
		return nil, err
	}
	if sc.IsAll() {
		return db.store.Verify(ctx, root)
	}
	base, err := db.store.Root(arbornet.BaseRef)
	if err != nil {
		return nil, err
	}
	rep, err := db.store.VerifyScope(ctx, base, sc)
	if err != nil || root == base {
		return rep, err
	}
	return db.store.VerifyScope(ctx, root, sc)
}

// Scope returns the keys the store replicates: scope.All, or for a partial
// replica the scope its last sync stored.
func (db *DB) Scope() (scope.Scope, error) {
	if p := db.scope.Load(); p != nil {
		return *p, nil
	}
	sc, err := arbornet.StoredScope(db.store)
	if err != nil {
		return sc, err
	}
	db.scope.Store(&sc)
	return sc, nil
}

// Settle finishes, now, what a bulk load (an initial clone, an Import into
// an empty store) leaves to the background: moving the nodes it wrote
// inline in Pebble's sstables to blob files, which keeps later lookups and
// walks fast. An open DB does it on its own about a second after the load,
// and when it is opened unsettled; a short-lived program that bulk-loads
// calls Settle before Close (the CLI does). It does nothing on a settled
// store.
func (db *DB) Settle(ctx context.Context) error { return db.store.Settle(ctx) }

// GCStats is the result of GC.
type GCStats = tree.GCStats

// GC deletes nodes no retained root reaches and compacts the store.
// On a partial replica it keeps only the nodes that overlap the replica's
// scope (tree.Store.GCScope).
func (db *DB) GC(ctx context.Context) (GCStats, error) {
	sc, err := db.Scope()
	if err != nil {
		return GCStats{}, err
	}
	if !sc.IsAll() {
		return db.store.GCScope(ctx, sc)
	}
	return db.store.GC(ctx)
}

// Export writes the records in r as sorted KEY<TAB>VALUE lines. It refuses
// records whose key or value holds a tab or newline, which the format cannot
// carry (use JSON lines via ExportJSONL).
func (db *DB) Export(ctx context.Context, w io.Writer, r Range, limit int) (int64, error) {
	return db.export(ctx, w, r, limit, false)
}

// ExportJSONL writes the records in r as sorted JSON lines (RecordJSON):
// any bytes round-trip through Import with FormatJSONL.
func (db *DB) ExportJSONL(ctx context.Context, w io.Writer, r Range, limit int) (int64, error) {
	return db.export(ctx, w, r, limit, true)
}

func (db *DB) export(ctx context.Context, w io.Writer, r Range, limit int, jsonl bool) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw) // one compact object a line
	enc.SetEscapeHTML(false)
	it := db.NewIterator(ctx, r)
	defer it.Close()
	var n int64
	for (limit <= 0 || n < int64(limit)) && it.Next() {
		if jsonl {
			if err := enc.Encode(NewRecordJSON(it.Key(), it.Value())); err != nil {
				return n, err
			}
		} else {
			if strings.ContainsAny(string(it.Key()), "\t\n") || bytes.ContainsAny(it.Value(), "\t\n") {
				return n, fmt.Errorf("export: key %q: %w: key or value holds a tab or newline; use JSON lines", it.Key(), ErrBadInput)
			}
			bw.Write(it.Key())
			bw.WriteByte('\t')
			bw.Write(it.Value())
			bw.WriteByte('\n')
		}
		n++
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	return n, bw.Flush()
}
