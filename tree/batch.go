package tree

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// spillBytes is how many bytes of nodes and blobs a Batch buffers in its
// Pebble batch before writing them ahead of the commit. Spilled nodes are
// unreferenced until the commit moves a ref to them, so a crash before then
// leaves only garbage. Modest spills keep Pebble batches small (a large one
// grows by doubling, copying its contents each time). It is a variable so
// that tests can exercise spilling with small batches.
var spillBytes = 8 << 20

// Edit is one change to a tree: set Key to Value, or delete Key.
type Edit struct {
	Key    []byte
	Value  []byte
	Delete bool
}

// Batch accumulates new nodes, blobs, ref moves and metadata and commits
// them atomically. A Batch excludes garbage collection until it is
// committed or discarded, so every Batch must end in Commit or Discard.
// A Batch is not safe for concurrent use.
type Batch struct {
	s       *Store
	pb      *pebble.Batch
	pending map[node.Hash]*pendingNode
	// pendingBytes is the size of the nodes in pending. Pending nodes are
	// kept across spills (for Batch.node and for the cache after commit)
	// while they fit in a quarter of the node cache.
	pendingBytes int
	bulk         bool   // pending was dropped: the batch is a bulk load
	load         bool   // BulkLoad: nodes are written out, never read back, so never kept in pending
	ingest       bool   // spill by sstable ingestion (set by NewBuilder)
	spillKVs     []kv   // with ingest: nodes and blobs not yet spilled
	ingesting    *spill // with ingest: the latest spill, if any
	ingestPrev   *spill // with ingest: the spill before it
	ingested     bool   // a spill was ingested: settle after the commit
	size         int
	refs         map[string]*node.Hash // nil value: delete
	expect       map[string]*node.Hash // nil value: must be unset
	meta         map[string][]byte     // nil value: delete
	// replaced lists the nodes that Apply rewrote. Commit drops them from
	// the node cache, which then holds the trees being edited rather than
	// their superseded versions.
	replaced []node.Hash
	scratch  deltaScratch // for deltaFrom
	// claims are the addresses this batch is writing in a store that
	// checks addresses (address.go): released once the bytes are
	// committed to Pebble, or when the batch ends.
	claims claimSet
	// checkAll turns address checks on for this batch (CheckAddresses);
	// blobsChecked leaves its blobs to the caller (CheckNodeAddresses).
	checkAll, blobsChecked bool
	// workDone are working-set generations this batch applies: their keys
	// are deleted in the commit that moves the ref (working.go).
	workDone []uint64
	// unverified are claimed writes in pb not yet probed for; failed
	// is the error that probing them gave, which fails the commit.
	unverified []written
	failed     error
	ended      bool
	release    func()
}

// NewBatch starts a batch.
func (s *Store) NewBatch() (*Batch, error) {
	done, err := s.use()
	if err != nil {
		return nil, err
	}
	s.gc.RLock()
	s.hashMu.RLock() // Reinit waits for open batches: they hash with s.alg
	return &Batch{
		s:       s,
		pb:      s.db.NewBatch(),
		pending: map[node.Hash]*pendingNode{},
		refs:    map[string]*node.Hash{},
		expect:  map[string]*node.Hash{},
		meta:    map[string][]byte{},
		release: func() { s.hashMu.RUnlock(); s.gc.RUnlock(); done() },
	}, nil
}

// Discard abandons the batch. It is safe to call after Commit.
func (b *Batch) Discard() {
	if b.ended {
		return
	}
	b.ended = true
	b.waitIngest() // its error no longer matters: nothing references those nodes
	b.pb.Close()
	b.s.releaseClaims(b.claims) // committed, or never will be
	b.release()
}

// Commit writes everything in the batch, and moves its refs, atomically.
// It fails with ErrRefMoved, writing nothing, if a ref set by ExpectRef
// changed. The batch is ended either way.
func (b *Batch) Commit(ctx context.Context) error {
	if b.ended {
		return errors.New("tree: batch already ended")
	}
	defer b.Discard()
	if err := ctx.Err(); err != nil {
		return err
	}
	// The last part of a bulk load goes in with the commit, through the
	// write-ahead log if it is small; a large one is one more spill, which
	// costs a few fsyncs but writes its nodes once rather than twice. Its
	// caller waits for it with nothing else to do, so it is written in
	// parallel parts, while the spill before it (if any) is still
	// finishing.
	if b.ingest && b.size >= ingestTailMin {
		if err := b.startIngest(tailParts); err != nil {
			return fmt.Errorf("store %s: write nodes: %w", b.s.dir, err)
		}
	}
	if err := b.waitIngest(); err != nil {
		return fmt.Errorf("store %s: write nodes: %w", b.s.dir, err)
	}
	if err := b.verify(ctx); err != nil {
		return err
	}
	for _, e := range b.spillKVs {
		if err := b.pb.Set(e.k, e.v, nil); err != nil {
			return err
		}
	}
	b.spillKVs = nil
	b.s.commit.Lock()
	defer b.s.commit.Unlock()
	if err := b.s.failure.get(); err != nil {
		return fmt.Errorf("store %s: %w", b.s.dir, err) // found corrupt since the batch began
	}
	if w := &b.s.work; w.ref != "" && b.workDone == nil {
		if _, ok := b.expect[w.ref]; ok {
			// A write acknowledged after the caller read the ref is not in
			// it yet: the ref has moved in effect. Hold the working set's
			// lock through the commit, so none slips in between.
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.cur) > 0 || w.applying != nil {
				return fmt.Errorf("store %s: ref %q has working-set edits it lacks: %w", b.s.dir, w.ref, ErrRefMoved)
			}
		}
	}
	for name, want := range b.expect {
		got, ok, err := b.s.rawRef(name) // under commit: a catch-up here would deadlock
		if err != nil {
			return err
		}
		if ok != (want != nil) || (ok && got != *want) {
			return fmt.Errorf("store %s: ref %q: %w", b.s.dir, name, ErrRefMoved)
		}
	}
	// Metadata and ref moves enter the Pebble batch only now: a spill
	// (maybeSpill) writes the batch's earlier contents ahead of the commit,
	// which is safe for unreferenced nodes but not for these.
	for name, v := range b.meta {
		if v == nil {
			if err := b.pb.Delete(metaKey("app/"+name), nil); err != nil {
				return err
			}
		} else if err := b.pb.Set(metaKey("app/"+name), v, nil); err != nil {
			return err
		}
	}
	if b.ingested {
		// Pebble moves ingested nodes to blob files only when this store
		// settles (settle.go): mark it unsettled with the commit.
		b.s.settler.gen.Add(1)
		if err := b.pb.Set(metaKey(metaUnsettled), []byte{1}, nil); err != nil {
			return err
		}
	}
	for name, h := range b.refs {
		if h != nil && (h.IsZero() || h.Alg() != b.s.alg) {
			return fmt.Errorf("store %s: ref %q: %w (root %s of %s in a %s store)", b.s.dir, name, node.ErrCorrupt, h, h.Alg(), b.s.alg)
		}
		if h == nil {
			if err := b.pb.Delete(refKey(name), nil); err != nil {
				return err
			}
		} else if err := b.pb.Set(refKey(name), h.Bytes(), nil); err != nil {
			return err
		}
	}
	for _, g := range b.workDone {
		lo, hi := workGenBounds(g)
		if err := b.pb.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
	}
	wo := b.s.wopts
	if b.workDone != nil {
		// A catch-up need not be synced: what it applies is durable in
		// the working set already, and until this commit reaches the disk
		// (any later synced write takes it along) Open applies it again.
		wo = pebble.NoSync
	}
	if err := b.pb.Commit(wo); err != nil {
		return fmt.Errorf("store %s: commit: %w", b.s.dir, err)
	}
	if len(b.meta) > 0 {
		b.s.metaGen.Add(1) // after the commit: see MetaGeneration
	}
	b.cacheCommitted()
	if len(b.refs) > 0 {
		b.s.announceRefs()
	}
	if b.ingested {
		b.s.scheduleSettle()
	}
	return nil
}

// pendingNode is a node written by the batch: its bytes and, once decoded,
// its view.
type pendingNode struct {
	raw   []byte
	n     *node.Node
	delta []byte // the stored delta, if the node was written as one
}

// cacheCommitted adds the committed batch's nodes to the store's node
// cache: the next batch usually edits the paths this one wrote. Nodes never
// enter the cache before they are stored, because HasNode trusts it.
func (b *Batch) cacheCommitted() {
	if b.s.cache.budget <= 0 {
		return
	}
	for _, h := range b.replaced {
		b.s.cache.remove(h)
	}
	if b.bulk {
		return
	}
	for h, p := range b.pending {
		n := p.n
		if n == nil {
			var err error
			if n, err = node.Decode(p.raw); err != nil {
				continue // unreachable: the batch encoded it
			}
		}
		b.s.cache.add(h, cached{n: n, delta: p.delta})
	}
}

// SetRef makes ref name point at root when the batch commits.
func (b *Batch) SetRef(name string, root node.Hash) { b.refs[name] = &root }

// DeleteRef removes ref name when the batch commits.
func (b *Batch) DeleteRef(name string) { b.refs[name] = nil }

// ExpectRef makes Commit fail with ErrRefMoved unless ref name still points
// at root (or, if ok is false, is still unset).
func (b *Batch) ExpectRef(name string, root node.Hash, ok bool) {
	if ok {
		b.expect[name] = &root
	} else {
		b.expect[name] = nil
	}
}

// SetMeta stores application metadata under name when the batch commits.
// value is copied. The error is always nil; it is kept for compatibility.
func (b *Batch) SetMeta(name string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	b.meta[name] = bytes.Clone(value)
	return nil
}

// DeleteMeta removes application metadata name when the batch commits.
// The error is always nil; it is kept for compatibility.
func (b *Batch) DeleteMeta(name string) error {
	b.meta[name] = nil
	return nil
}

// PutNode validates raw as a node and stores it, returning its hash. The
// caller's slice is copied. This is how nodes received from elsewhere enter
// a store: their address is always recomputed here.
func (b *Batch) PutNode(raw []byte) (node.Hash, error) {
	n, err := node.Decode(raw)
	if err != nil {
		return node.Hash{}, err
	}
	if err := b.checkAlg(n); err != nil {
		return node.Hash{}, err
	}
	h, err := b.putNode(bytes.Clone(raw))
	if err == nil {
		err = b.verify(context.Background())
	}
	return h, err
}

// PutDecoded stores node n, returning its hash, which is recomputed from
// its bytes. A *node.Node comes only from node.Decode or node.Build, so it
// is well formed; the batch keeps n's bytes without copying them, so the
// caller must not modify them. This is how a verified node received from
// elsewhere enters a store without being decoded twice.
func (b *Batch) PutDecoded(n *node.Node) (node.Hash, error) { return b.PutDecodedNear(n, node.Hash{}) }

// PutDecodedNear is PutDecoded for a node that replaces near, a node the
// store holds at the same level and keys (such as the hint a sync's node
// delta was made against): when near is at hand (in the node cache or
// this batch) and the difference is small, n is stored as a delta of
// near's base, as Apply stores the nodes it rewrites. A zero near is
// PutDecoded.
func (b *Batch) PutDecodedNear(n *node.Node, near node.Hash) (node.Hash, error) {
	if err := b.checkAlg(n); err != nil {
		return node.Hash{}, err
	}
	h, err := b.put(context.Background(), n.Raw(), n, near)
	if err == nil {
		err = b.verify(context.Background())
	}
	return h, err
}

// checkAlg refuses a node of another hash algorithm than the store's: its
// addresses would name nothing here.
func (b *Batch) checkAlg(n *node.Node) error {
	if n.Alg() != b.s.alg {
		return fmt.Errorf("store %s: node %s: %w (a %s node in a %s store)", b.s.dir, n.Hash(), node.ErrCorrupt, n.Alg(), b.s.alg)
	}
	return nil
}

// putNode stores an encoded node that the caller guarantees is valid and
// will not modify.
func (b *Batch) putNode(raw []byte) (node.Hash, error) {
	return b.put(context.Background(), raw, nil, node.Hash{})
}

// putBuilt stores node n, which replaces the stored node near (zero if
// none): if near or its base is at hand, n is written as a delta of that
// base when the delta is small (see delta.go).
func (b *Batch) putBuilt(ctx context.Context, n *node.Node, near node.Hash) (node.Hash, error) {
	return b.put(ctx, n.Raw(), n, near)
}

// put stores the encoded node raw; n is its view if the caller has one.
// In a store that checks addresses it fails with ErrAddressConflict if
// other bytes are being written under raw's hash or the node cache holds
// other bytes there; whether the store holds other bytes there is probed
// later (Batch.verify).
func (b *Batch) put(ctx context.Context, raw []byte, n *node.Node, near node.Hash) (node.Hash, error) {
	var h node.Hash
	if n != nil {
		h = n.Hash() // hashed when n was decoded or built
	} else {
		h = b.s.alg.Sum(raw)
	}
	if h == b.s.EmptyRoot() {
		return h, nil
	}
	if p, ok := b.pending[h]; ok {
		if b.checked() {
			return h, b.pendingConflict(h, p.raw, raw)
		}
		return h, nil
	}
	if b.checked() {
		// Cached, or written by this batch already: nothing to write.
		if write, err := b.claimNode(h, raw, b.ownClaims()); err != nil || !write {
			return h, err
		}
		b.unverified = append(b.unverified, written{makeClaimKey(kindNode, h), raw})
	} else if b.s.cache.has(h) {
		// A node in the cache is stored (nodes enter it only once
		// committed, and garbage collection, which removes them, waits
		// for this batch): rewriting it would only add work for Pebble's
		// compactions.
		return h, nil
	}
	var d []byte
	if n != nil && !b.ingest && !near.IsZero() && near != b.s.EmptyRoot() {
		d = b.deltaFrom(&b.scratch, h, n, near)
	}
	return h, b.store(h, raw, n, d)
}

// adopt records a node a parallel Apply worker wrote to Pebble itself as
// one of the batch's nodes (for later lookups and the cache).
func (b *Batch) adopt(bn builtNode) {
	if _, ok := b.pending[bn.h]; ok || b.bulk {
		return
	}
	b.pending[bn.h] = &pendingNode{raw: bn.n.Raw(), n: bn.n, delta: bn.delta}
	b.pendingBytes += len(bn.n.Raw())
	if int64(b.pendingBytes) > b.s.cache.budget/4 {
		clear(b.pending) // as maybeSpill does for a load larger than the cache
		b.pendingBytes = 0
		b.bulk = true
	}
}

// store writes node h (raw, decoded as n if not nil) to the batch, as the
// delta d if d is not nil.
func (b *Batch) store(h node.Hash, raw []byte, n *node.Node, d []byte) error {
	key, stored := nodeKey(h), raw
	if d != nil {
		key, stored = deltaKey(h), d
	}
	if !b.load {
		b.pending[h] = &pendingNode{raw: raw, n: n, delta: d}
		b.pendingBytes += len(raw)
	}
	b.size += len(stored)
	if b.ingest {
		b.spillKVs = append(b.spillKVs, kv{key, raw}) // never a delta: d is nil
	} else if err := b.pb.Set(key, stored, nil); err != nil {
		return err
	}
	return b.maybeSpill()
}

// deltaScratch is reusable memory for deltaFrom.
type deltaScratch struct{ near, diff, out []deltaOp }

// deltaFrom returns node n (hash h) encoded as a delta of near's base, or
// nil if near is not at hand (in this batch or the node cache) or the delta
// would not be small. It never reads the store: a missed delta only costs
// bytes.
//
// Parallel Apply workers call it concurrently: it only reads the batch.
func (b *Batch) deltaFrom(sc *deltaScratch, h node.Hash, n *node.Node, near node.Hash) []byte {
	var e cached
	if p, ok := b.pending[near]; ok {
		if p.n == nil {
			return nil
		}
		e = cached{n: p.n, delta: p.delta}
	} else if e = b.s.cache.entry(near); e.n == nil {
		return nil
	}
	if e.n.Level() != n.Level() {
		return nil
	}
	limit := len(n.Raw())/deltaMaxFraction - deltaHeader(b.s.alg) - 2
	ops, ok := diffOps(sc.diff, e.n, n, limit)
	sc.diff = ops
	if !ok {
		return nil
	}
	base := near
	if e.delta != nil {
		d, err := decodeDeltaInto(b.s.alg, e.delta, sc.near)
		sc.near = d.ops
		if err != nil {
			return nil
		}
		sc.out = composeOps(sc.out, d.ops, ops)
		base, ops = d.base, sc.out
	}
	if base == h {
		return nil // back to the base's own contents: store it whole
	}
	out := appendDelta(nil, n.Level(), base, ops)
	if len(out) > len(n.Raw())/deltaMaxFraction {
		return nil
	}
	return out
}

// PutBlob stores a value blob (chunk or index) and returns its hash. In a
// store that checks addresses it fails with ErrAddressConflict if other
// bytes are stored, or being written, under that hash.
func (b *Batch) PutBlob(raw []byte) (node.Hash, error) {
	return b.putBlob(raw, false)
}

// putBlob is PutBlob; if deferred, a checked blob's address is probed
// later (Batch.verify), with the other writes of an Apply.
func (b *Batch) putBlob(raw []byte, deferred bool) (node.Hash, error) {
	h := b.s.alg.Sum(raw)
	if b.checked() && !b.blobsChecked {
		// Stored with these bytes (or written by this batch already):
		// nothing to write.
		own := b.ownClaims()
		if deferred {
			k, c := makeClaimKey(kindBlob, h), bytes.Clone(raw) // raw is the caller's
			if write, err := b.s.claim(k, c, own, own); err != nil || !write {
				return h, err
			}
			b.unverified = append(b.unverified, written{k, c})
		} else if write, err := b.s.checkWrite(context.Background(), kindBlob, h, raw, own, own); err != nil || !write {
			return h, err
		}
	}
	b.size += len(raw)
	if b.ingest {
		b.spillKVs = append(b.spillKVs, kv{blobKey(h), bytes.Clone(raw)})
	} else if err := b.pb.Set(blobKey(h), raw, nil); err != nil {
		return h, err
	}
	return h, b.maybeSpill()
}

func (b *Batch) maybeSpill() error {
	limit := spillBytes
	if b.ingest {
		limit = ingestSpillBytes
		if b.s.bulkSpill > 0 {
			limit = b.s.bulkSpill
		}
	}
	if b.size < limit {
		return nil
	}
	if err := b.verify(context.Background()); err != nil {
		return err
	}
	if b.ingest {
		if err := b.startIngest(1); err != nil {
			return fmt.Errorf("store %s: write nodes: %w", b.s.dir, err)
		}
	} else {
		if err := b.pb.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("store %s: write nodes: %w", b.s.dir, err)
		}
		b.pb.Close()
		b.s.releaseClaims(b.claims) // the claimed bytes are in Pebble now
		// A batch that spilled once is a bulk load: size the next Pebble
		// batch for a whole spill instead of growing it by doubling.
		b.pb = b.s.db.NewBatchWithSize(limit + limit/8)
	}
	if int64(b.pendingBytes) > b.s.cache.budget/4 {
		// A bulk load larger than the cache: stop holding its nodes, and
		// do not cache its tail after the commit either.
		clear(b.pending)
		b.pendingBytes = 0
		b.bulk = true
	}
	b.size = 0
	return nil
}

// nodeShared is node for parallel Apply workers: it does not change the
// batch (it neither waits for an ingest, which workers never run beside,
// nor keeps what it decodes).
func (b *Batch) nodeShared(ctx context.Context, h node.Hash) (*node.Node, error) {
	if p, ok := b.pending[h]; ok {
		if p.n != nil {
			return p.n, nil
		}
		n, err := node.Decode(p.raw)
		if err != nil {
			return nil, fmt.Errorf("store %s: pending node %s: %w", b.s.dir, h, err)
		}
		return n, nil
	}
	return b.s.Node(ctx, h)
}

// node loads a node from the batch or the store.
func (b *Batch) node(ctx context.Context, h node.Hash) (*node.Node, error) {
	if p, ok := b.pending[h]; !ok {
		// A node spilled and dropped from pending may still be on its way
		// into Pebble.
		if err := b.waitIngest(); err != nil {
			return nil, fmt.Errorf("store %s: write nodes: %w", b.s.dir, err)
		}
	} else {
		if p.n == nil {
			n, err := node.Decode(p.raw)
			if err != nil {
				return nil, fmt.Errorf("store %s: pending node %s: %w", b.s.dir, h, err)
			}
			p.n = n
		}
		return p.n, nil
	}
	return b.s.Node(ctx, h)
}

// StoreValue returns v's stored form, writing an out-of-line value's chunks
// and index into the batch.
func (b *Batch) StoreValue(v []byte) (node.Value, error) {
	sv, err := b.storeValue(v)
	if err == nil {
		err = b.verify(context.Background())
	}
	return sv, err
}

// storeValue is StoreValue with a checked store's probes deferred
// (Batch.verify).
func (b *Batch) storeValue(v []byte) (node.Value, error) {
	if len(v) <= node.MaxInlineValue {
		return node.InlineValue(v), nil
	}
	if len(v) > node.MaxValueSize {
		return node.Value{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrValueTooLarge, len(v), node.MaxValueSize)
	}
	sizes := chunker.SplitValue(v)
	chunks := make([]node.Chunk, len(sizes))
	off := 0
	for i, n := range sizes {
		h, err := b.putBlob(v[off:off+n], true)
		if err != nil {
			return node.Value{}, err
		}
		chunks[i] = node.Chunk{Hash: h, Size: uint32(n)}
		off += n
	}
	idx, err := b.putBlob(node.EncodeValueIndex(b.s.alg, chunks), true)
	if err != nil {
		return node.Value{}, err
	}
	return node.RefValue(idx, uint64(len(v))), nil
}

// checkStoredValue rejects a stored value that no node may hold: an inline
// value over node.MaxInlineValue bytes, or a reference to a value that is
// small enough to be inline (Decode rejects both, so writing one would
// make the tree unreadable) or over node.MaxValueSize.
func checkStoredValue(alg node.Alg, v node.Value) error {
	switch {
	case v.IsRef && (v.Ref.IsZero() || v.Ref.Alg() != alg):
		return fmt.Errorf("%w: a value reference %s of %s in a %s store", node.ErrCorrupt, v.Ref, v.Ref.Alg(), alg)
	case !v.IsRef && len(v.Inline) > node.MaxInlineValue:
		return fmt.Errorf("inline value of %d bytes (limit %d): %w", len(v.Inline), node.MaxInlineValue, ErrValueTooLarge)
	case v.IsRef && v.Size > node.MaxValueSize:
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrValueTooLarge, v.Size, node.MaxValueSize)
	case v.IsRef && v.Size <= node.MaxInlineValue:
		return fmt.Errorf("%w: reference to a %d-byte value, which must be stored inline", node.ErrCorrupt, v.Size)
	}
	return nil
}

func checkKey(k []byte) error {
	if len(k) == 0 || len(k) > node.MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes (limit %d)", ErrKeyTooLarge, len(k), node.MaxKeySize)
	}
	return nil
}

// Apply applies edits to the tree at root and returns the new root. Only
// the paths the edits touch are rewritten. Within edits, a later edit of a
// key overrides an earlier one; deleting a missing key is a no-op. edits is
// not modified; values are copied into the batch.
func (b *Batch) Apply(ctx context.Context, root node.Hash, edits []Edit) (node.Hash, error) {
	les := make([]levelEdit, len(edits))
	for i, e := range edits {
		if err := checkKey(e.Key); err != nil {
			return node.Hash{}, err
		}
		les[i].key = e.Key
		if !e.Delete {
			v, err := b.storeValue(e.Value)
			if err != nil {
				return node.Hash{}, fmt.Errorf("key %q: %w", e.Key, err)
			}
			les[i].payload = v.AppendPayload(nil)
		}
	}
	return b.applyStored(ctx, root, les)
}

// StoredEdit is an edit whose value is already in stored form: Value is
// nil to delete the key.
type StoredEdit struct {
	Key   []byte
	Value *node.Value
}

// ApplyValues is Apply for values already in stored form (for example an
// out-of-line value received from a peer, whose blobs are already stored).
// A malformed stored value (an inline value over node.MaxInlineValue, or a
// reference whose size is not above it) gives an error and writes nothing.
func (b *Batch) ApplyValues(ctx context.Context, root node.Hash, edits []StoredEdit) (node.Hash, error) {
	les := make([]levelEdit, len(edits))
	for i, e := range edits {
		if err := checkKey(e.Key); err != nil {
			return node.Hash{}, err
		}
		les[i].key = e.Key
		if e.Value != nil {
			if err := checkStoredValue(b.s.alg, *e.Value); err != nil {
				return node.Hash{}, fmt.Errorf("key %q: %w", e.Key, err)
			}
			les[i].payload = e.Value.AppendPayload(nil)
		}
	}
	return b.applyStored(ctx, root, les)
}

// applyStored applies edits whose payloads are already encoded.
func (b *Batch) applyStored(ctx context.Context, root node.Hash, les []levelEdit) (node.Hash, error) {
	if b.pb.Empty() && !b.ingest && len(les) >= 1024 {
		// Size the Pebble batch for the nodes this Apply will write (about
		// a kilobyte per scattered edit) instead of growing it by doubling.
		b.pb.Close()
		b.pb = b.s.db.NewBatchWithSize(min(spillBytes+spillBytes/8, 1024*len(les)))
		b.size = 0
	}
	// Sort by key; on equal keys the later edit wins. A stable sort of
	// the edits themselves (insertion sort and merging) costs several times
	// a pattern-defeating sort of their positions.
	byKey := func(x, y levelEdit) int { return bytes.Compare(x.key, y.key) }
	if !slices.IsSortedFunc(les, byKey) {
		order := make([]int32, len(les))
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortFunc(order, func(i, j int32) int {
			if c := bytes.Compare(les[i].key, les[j].key); c != 0 {
				return c
			}
			return cmp.Compare(i, j)
		})
		sorted := make([]levelEdit, len(les))
		for k, i := range order {
			sorted[k] = les[i]
		}
		les = sorted
	}
	w := 0
	for i := range les {
		if w > 0 && bytes.Equal(les[w-1].key, les[i].key) {
			les[w-1] = les[i]
			continue
		}
		les[w] = les[i]
		w++
	}
	m := &mutator{ctx: ctx, cfg: b.s.cfg, b: b}
	root, err := m.apply(root, les[:w])
	if err == nil {
		err = b.verify(ctx) // a checked store's writes (address.go)
	}
	return root, err
}
