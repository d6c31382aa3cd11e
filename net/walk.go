package net

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// A walk commits its fetched nodes every walkCommitBytes or walkCommitNodes,
// whichever comes first, so an interrupted walk keeps most of its progress.
const (
	walkCommitBytes = 1 << 20
	walkCommitNodes = 1024
)

// walkBulkMin is the least an initial clone must be, by its estimate, to be
// stored as a bulk load (see walker.startBulk): two of tree's 32 MiB
// ingestion spills. A variable so that tests can clone small trees in bulk.
var walkBulkMin int64 = 64 << 20

// walkStreams lets a walk into an empty store fetch subtrees whole
// (GetTree). A variable so that tests can make such a walk go node by node.
var walkStreams = true

// pendingNode is a fetched branch whose children are not all stored yet.
// It is stored only when they are, so a stored node always has its whole
// subtree stored: the invariant that lets a walk skip every subtree whose
// root it already holds, even after an interrupted walk.
type pendingNode struct {
	n       *node.Node
	hint    node.Hash // the local node n replaces, or zero: n may be stored as its delta
	missing int
	parent  *pendingNode
}

type walkItem struct {
	h      node.Hash
	hint   node.Hash // a local node at the same level and keys, or zero
	level  int       // expected level; -1 for the root
	lo     []byte    // the node's keys lie above lo (nil: unbounded); for a partial walk
	open   bool      // the node is on the tree's right edge: its interval is unbounded above
	count  uint64    // records under the node, as its parent says
	parent *pendingNode
	// self is set on a branch that came in a subtree stream (GetTree): its
	// children follow in the same stream, so the fetcher made its pending
	// entry, for them to point at.
	self *pendingNode
	// blob is set on an item that is not a node but a value blob from a
	// subtree stream, verified, for the leaf before it; index marks a
	// value index, which comes after its chunks.
	blob  []byte
	index bool
}

// walkResult is a chunk of a fetch's verified nodes.
type walkResult struct {
	items  []walkItem
	nodes  []*node.Node  // verified against items
	values *streamValues // the subtree stream's, if it came from one
}

// walker fetches the server's tree under a root, level by level, skipping
// every subtree the client already holds.
type walker struct {
	sy       *syncer
	b        *tree.Batch
	size     int  // bytes of nodes in b
	count    int  // nodes in b
	pending  int  // branches waiting for their children
	clone    bool // an initial clone into an empty store, nothing stored yet
	empty    bool // the store held no node when the walk began
	bulk     bool // b is a bulk load (startBulk), committed at the end
	stream   bool // fetch whole subtrees (GetTree), not nodes level by level
	com      *committer
	frontier [node.MaxLevel + 1][]walkItem
	leaves   []leafWait // leaves waiting for their value blobs
	// values is the subtree stream of the chunk being processed (nil for
	// a node fetch): see streamValues.
	values *streamValues
}

// streamValues is a subtree stream's leaf whose value blobs are arriving,
// or nil: refs holds the indexes still to come. Chunks of different
// streams interleave, so each stream has its own.
type streamValues struct {
	leaf *leafWait
}

type leafWait struct {
	n      *node.Node
	hint   node.Hash
	refs   []node.Hash
	parent *pendingNode
}

// walk makes the client store hold the whole tree at root, or for a
// partial replica the tree pruned to its scope: every node whose key
// interval overlaps the scope, and the value blobs of keys in it.
func (sy *syncer) walk(ctx context.Context, root node.Hash) error {
	if ok, err := sy.store.HasNode(root); err != nil || (ok && sy.added.IsEmpty()) {
		return err
	}
	b, err := sy.store.NewBatch()
	if err != nil {
		return err
	}
	w := &walker{sy: sy, b: b, com: newCommitter(ctx)}
	// A tree holds no node twice (its nodes' key ranges differ), so in a
	// store that holds no node yet, no child the walk meets is held.
	held, err := sy.store.HoldsNodes()
	if err != nil {
		b.Discard()
		return err
	}
	w.empty = !held
	// Into an empty store every subtree is fetched whole, so the server
	// may stream each one, unasked node by node, when it may send all of
	// it (no scope to prune to).
	w.stream = walkStreams && w.empty && !sy.partial && sy.added.IsEmpty()
	// An initial clone into a store that holds no tree yet may be stored
	// as a bulk load (see startBulk).
	w.clone = !sy.hasBase && sy.head0 == sy.store.EmptyRoot()
	// The client's own tree guides the server's deltas: its nodes are
	// usually old versions of the nodes being fetched.
	hint := sy.base
	if !sy.hasBase {
		hint = sy.head0
	}
	if hint == sy.store.EmptyRoot() {
		hint = node.Hash{}
	}
	if sy.cl.w.Root == root && len(sy.cl.w.RootNode) > 0 {
		it := walkItem{h: root, hint: hint, level: -1, open: true}
		var n *node.Node
		if n, err = sy.verifyNode(nil, it, sy.cl.w.RootNode); err == nil {
			err = w.process(ctx, it, n)
		}
	} else {
		w.frontier[0] = append(w.frontier[0], walkItem{h: root, hint: hint, level: -1, open: true})
	}
	if err == nil {
		err = w.run(ctx)
	}
	// Keep what was fetched, even on failure: every node in the batch
	// heads a complete subtree, so the next walk skips it.
	if w.b != nil {
		w.com.submit(w.b)
	}
	if cerr := w.com.close(); err == nil {
		err = cerr
	}
	return err
}

// committer commits a walk's batches in order on its own goroutine, so
// that storage writes overlap with fetching and verifying. Order matters:
// a later batch may hold the parents of an earlier one's nodes.
type committer struct {
	ch   chan *tree.Batch
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newCommitter(ctx context.Context) *committer {
	c := &committer{ch: make(chan *tree.Batch, 2), done: make(chan struct{})}
	ctx = context.WithoutCancel(ctx) // an interrupted walk keeps its progress
	go func() {
		defer close(c.done)
		for b := range c.ch {
			if c.failed() != nil {
				b.Discard()
				continue
			}
			if err := b.Commit(ctx); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func (c *committer) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// submit queues b for commit; it blocks while two batches are queued.
func (c *committer) submit(b *tree.Batch) error {
	if err := c.failed(); err != nil {
		b.Discard()
		return err
	}
	c.ch <- b
	return nil
}

// close waits for every queued batch and returns the first commit error.
func (c *committer) close() error {
	close(c.ch)
	<-c.done
	return c.failed()
}

// take removes up to n items from the lowest non-empty level, so that
// pending branches complete before more are fetched (bounded memory).
func (w *walker) take(n int) []walkItem {
	for l := range w.frontier {
		f := w.frontier[l]
		if len(f) == 0 {
			continue
		}
		k := min(n, len(f))
		items := append([]walkItem(nil), f[len(f)-k:]...)
		w.frontier[l] = f[:len(f)-k]
		return items
	}
	return nil
}

// takeTrees removes from the frontier the subtrees of one GetTree request:
// about a 1/(streamShare × Parallel) share of the tree, by the records
// under them, so that the fetchers' last responses end close together. A
// branch over more than that share is not streamed whole but fetched as a
// node (whole is false), so that its children are shared out instead.
func (w *walker) takeTrees() (items []walkItem, whole bool) {
	want := max(uint64(max(w.sy.total, 1))/uint64(streamShare*w.sy.opts.Parallel), streamMinRecords)
	for l := range w.frontier {
		f := w.frontier[l]
		if len(f) == 0 {
			continue
		}
		split := func(it walkItem) bool { return it.level > 0 && it.count > want }
		var got uint64
		k := 0
		whole = !split(f[len(f)-1])
		for k < len(f) && k < maxRequestHashes && split(f[len(f)-1-k]) != whole {
			if whole && k > 0 && got >= want {
				break
			}
			got += f[len(f)-1-k].count
			k++
		}
		items = append([]walkItem(nil), f[len(f)-k:]...)
		w.frontier[l] = f[:len(f)-k]
		return items, whole
	}
	return nil, false
}

// streamShare × Parallel is how many GetTree requests a clone makes, about,
// unless that would make them smaller than streamMinRecords records (a
// variable for tests).
const streamShare = 8

var streamMinRecords uint64 = 1 << 16

func (w *walker) run(ctx context.Context) error {
	sy := w.sy
	ctx, cancel := context.WithCancel(ctx) // also stops the fetchers on an early return
	defer cancel()
	// Fetchers never wait for the walker: a fetcher that stopped reading
	// its stream would stall the server's writes to it (and could use up
	// the connection's flow-control window that GetBlobs needs). Their
	// chunks queue without bound; memory stays bounded by Parallel ×
	// BatchNodes nodes, which the frames hold anyway. The end of each
	// exchange comes on its own channel, so the next request goes out as
	// soon as a response has arrived, not once it has been stored.
	q := &chunkQueue{ready: make(chan struct{}, 1)}
	if queueHook != nil {
		defer func() { queueHook(q.peak) }()
	}
	finished := make(chan error, sy.opts.Parallel)
	inflight := 0
	// ended: an exchange ended since the last flushLeaves, which fetches
	// the value blobs of waiting leaves in one exchange; it runs when an
	// exchange ends, when many leaves wait, and at the end, rather than for
	// every chunk.
	ended := false
	end := func(err error) error {
		inflight--
		ended = true
		return err
	}
	collect := func() error {
		for {
			select {
			case err := <-finished:
				if err := end(err); err != nil {
					return w.keepQueued(ctx, q, err)
				}
			default:
				return nil
			}
		}
	}
	for {
		if err := collect(); err != nil {
			return err
		}
		if ended || len(w.leaves) >= walkLeafBatch {
			ended = false
			if err := w.flushLeaves(ctx); err != nil {
				return err
			}
		}
		for inflight < sy.opts.Parallel {
			if w.stream {
				items, whole := w.takeTrees()
				if items == nil {
					break
				}
				inflight++
				if whole {
					go func() { finished <- sy.fetchTrees(ctx, items, q.pushWait(ctx)) }()
				} else {
					go func() { finished <- sy.fetchNodes(ctx, items, q.push) }()
				}
				continue
			}
			items := w.take(sy.opts.BatchNodes)
			if items == nil {
				break
			}
			inflight++
			go func() { finished <- sy.fetchNodes(ctx, items, q.push) }()
		}
		r, ok := q.pop()
		if !ok {
			if inflight == 0 {
				return w.flushLeaves(ctx)
			}
			select {
			case err := <-finished:
				if err := end(err); err != nil {
					return w.keepQueued(ctx, q, err)
				}
			case <-q.ready:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		w.values = r.values
		for i, n := range r.nodes {
			if err := w.process(ctx, r.items[i], n); err != nil {
				return err
			}
		}
		if walkHook != nil {
			f := 0
			for _, l := range w.frontier {
				f += len(l)
			}
			walkHook(f, w.pending)
		}
		sy.progress("walk")
	}
}

// keepQueued processes the chunks queued when an exchange failed (the
// connection died, say) and returns err: the nodes received are verified,
// and storing those that complete a subtree spares the next attempt (on
// this server or, failing over, another) fetching them again. A cancelled
// walk (ctx ended) stops at once instead.
func (w *walker) keepQueued(ctx context.Context, q *chunkQueue, err error) error {
	for ctx.Err() == nil {
		r, ok := q.pop()
		if !ok {
			break
		}
		w.values = r.values
		for i, n := range r.nodes {
			if perr := w.process(ctx, r.items[i], n); perr != nil {
				return err
			}
		}
	}
	return err
}

// walkLeafBatch is how many leaves may wait for their value blobs before
// the walker fetches them, even in the middle of an exchange.
const walkLeafBatch = 1024

// chunkQueue passes fetched chunks from the fetchers to the walker. A
// node fetcher never waits (see run); a subtree fetcher, whose response
// has no bound, waits while the queue holds walkQueueBytes or more.
type chunkQueue struct {
	mu     sync.Mutex
	chunks []walkResult
	bytes  int
	peak   int           // the most bytes it held
	ready  chan struct{} // holds a token after a push
	space  chan struct{} // closed when the queue drops below walkQueueBytes
}

// walkQueueBytes bounds what subtree fetchers queue for the walker, but
// for the chunk each may add past it. A variable for tests.
var walkQueueBytes = 16 << 20

// queueHook, set by tests, observes the most a walk's queue held.
var queueHook func(peak int)

func (q *chunkQueue) push(r walkResult) {
	q.mu.Lock()
	q.chunks = append(q.chunks, r)
	q.bytes += r.size()
	q.peak = max(q.peak, q.bytes)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pushWait returns a push that first waits for room in the queue, or for
// ctx to end. The walker never needs the network to drain the queue (a
// subtree stream carries its value blobs), so the wait always ends.
func (q *chunkQueue) pushWait(ctx context.Context) func(walkResult) error {
	return func(r walkResult) error {
		q.mu.Lock()
		for q.bytes >= walkQueueBytes {
			if q.space == nil {
				q.space = make(chan struct{})
			}
			space := q.space
			q.mu.Unlock()
			select {
			case <-space:
			case <-ctx.Done():
				return ctx.Err()
			}
			q.mu.Lock()
		}
		q.mu.Unlock()
		q.push(r)
		return nil
	}
}

func (q *chunkQueue) pop() (walkResult, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.chunks) == 0 {
		return walkResult{}, false
	}
	r := q.chunks[0]
	q.chunks[0] = walkResult{}
	q.chunks = q.chunks[1:]
	if q.bytes -= r.size(); q.bytes < walkQueueBytes && q.space != nil {
		close(q.space)
		q.space = nil
	}
	return r, true
}

// size is about what r holds in memory.
func (r walkResult) size() int {
	n := 0
	for i, it := range r.items {
		if it.blob != nil {
			n += len(it.blob)
		} else if nd := r.nodes[i]; nd != nil {
			n += len(nd.Raw())
		}
	}
	return n
}

// A fetch hands its verified nodes to the walker in chunks of at most
// walkChunkNodes nodes or about walkChunkBytes: a large response is stored
// while the rest of it arrives, and the first branches of a level let the
// walker ask for the level below before the last ones arrive.
const (
	walkChunkNodes = 256
	walkChunkBytes = 256 << 10
)

// fetchNodes requests items' nodes in one exchange and hands them, verified,
// to emit in chunks as they arrive (a node whose delta failed to verify
// comes last, fetched again whole). It returns the exchange's error.
func (sy *syncer) fetchNodes(ctx context.Context, items []walkItem, emit func(walkResult)) error {
	hs := make([]nodeReq, len(items))
	for i, it := range items {
		hs[i] = nodeReq{Hash: it.h, Hint: it.hint}
		if it.hint == it.h {
			hs[i].Hint = node.Hash{} // a node is no hint for itself
		}
	}
	ex, err := sy.cl.request(ctx, msgGetNodes, encodeNodeReqs(sy.alg(), hs))
	if err != nil {
		return err
	}
	ex.fr.own = true // each node keeps its frame's buffer
	var dec node.Decoder
	cb := chunkBuilder{max: min(walkChunkNodes, len(items)), emit: func(r walkResult) error { emit(r); return nil }}
	add := func(it walkItem, n *node.Node) { cb.add(it, n, len(n.Raw())) }
	var retry []walkItem
	for i := range hs {
		f, err := ex.recv(msgNode, msgNodeDelta)
		if err != nil {
			return err
		}
		if f.Type == msgNode {
			n, err := sy.verifyNode(&dec, items[i], f.Payload)
			if err != nil {
				return err
			}
			add(items[i], n)
			continue
		}
		if hs[i].Hint.IsZero() {
			return fmt.Errorf("%s: %w: delta for node %s without a hint", sy.cl.peer, ErrProtocol, hs[i].Hash)
		}
		hn, err := sy.store.Node(ctx, hs[i].Hint)
		if err != nil && ctx.Err() != nil {
			return ctx.Err() // the walk has ended
		}
		if err != nil {
			// The local hint node is gone or damaged (a lost or suspicious
			// store): ask again for the whole node.
			sy.log.Warn("arbor sync: hint node unreadable; fetching the whole node", "node", items[i].h.String(), "hint", hs[i].Hint.String(), "err", err)
			retry = append(retry, items[i])
			continue
		}
		raw, err := applyNodeDelta(f.Payload, hn)
		if err != nil {
			return fmt.Errorf("%s: node %s: %w", sy.cl.peer, hs[i].Hash, err)
		}
		n, err := sy.verifyNode(&dec, items[i], raw)
		if err != nil {
			// Either the server lied or the local hint node is corrupt:
			// ask again for the whole node, which settles it.
			sy.log.Warn("arbor sync: node delta did not verify; fetching the whole node", "node", items[i].h.String(), "hint", items[i].hint.String(), "err", err)
			retry = append(retry, items[i])
			continue
		}
		add(items[i], n)
	}
	f, err := ex.recv(msgEnd)
	if err == nil {
		var n uint64
		if n, err = decodeEnd(f.Payload); err == nil && n != uint64(len(hs)) {
			err = fmt.Errorf("%s: %w: End says %d nodes, asked %d", sy.cl.peer, ErrProtocol, n, len(hs))
		}
	}
	if err == nil {
		err = ex.expectEOF()
	}
	if err != nil {
		return err
	}
	cb.flush()
	if len(retry) == 0 {
		return nil
	}
	for k := range retry {
		retry[k].hint = node.Hash{}
	}
	return sy.fetchNodes(ctx, retry, emit)
}

// fetchTrees requests the whole subtrees under items in one exchange and
// hands their nodes, verified, to emit in chunks as they arrive. The server
// sends each subtree depth first, a node before its children's subtrees:
// every node's hash is known before it arrives, from its parent.
func (sy *syncer) fetchTrees(ctx context.Context, items []walkItem, emit func(walkResult) error) error {
	hs := make([]node.Hash, len(items))
	for i, it := range items {
		hs[i] = it.h
	}
	ex, err := sy.cl.request(ctx, msgGetTree, encodeHashes(sy.alg(), hs))
	if err != nil {
		return err
	}
	ex.fr.own = true // each node keeps its frame's buffer
	var dec node.Decoder
	var got uint64
	// path holds the branches whose children are still arriving, each with
	// the index of the next.
	type step struct {
		p    *pendingNode
		next int
	}
	var path []step
	cb := chunkBuilder{max: walkChunkNodes, values: new(streamValues), emit: emit}
	add := cb.add
	for _, it := range items {
		for {
			f, err := ex.recv(msgNode)
			if err != nil {
				return err
			}
			n, err := sy.verifyNode(&dec, it, f.Payload)
			if err != nil {
				return err
			}
			got++
			if !n.IsLeaf() && n.Len() > 0 {
				it.self = &pendingNode{n: n, hint: it.hint, missing: n.Len(), parent: it.parent}
				path = append(path, step{p: it.self})
			}
			if err := add(it, n, len(n.Raw())); err != nil {
				return err
			}
			if n.IsLeaf() && n.Refs() > 0 {
				if err := sy.recvValues(ex, n, add); err != nil {
					return err
				}
			}
			for len(path) > 0 && path[len(path)-1].next == path[len(path)-1].p.n.Len() {
				path = path[:len(path)-1]
			}
			if len(path) == 0 {
				break
			}
			top := &path[len(path)-1]
			c, cnt := top.p.n.Child(top.next)
			top.next++
			it = walkItem{h: c, level: top.p.n.Level() - 1, count: cnt, parent: top.p}
		}
	}
	f, err := ex.recv(msgEnd)
	if err == nil {
		var n uint64
		if n, err = decodeEnd(f.Payload); err == nil && n != got {
			err = fmt.Errorf("%s: %w: End says %d nodes, received %d", sy.cl.peer, ErrProtocol, n, got)
		}
	}
	if err == nil {
		err = ex.expectEOF()
	}
	if err != nil {
		return err
	}
	return cb.flush()
}

// chunkBuilder gathers a fetch's verified items into the chunks it hands
// to the walker: max items or about walkChunkBytes each.
type chunkBuilder struct {
	max    int
	values *streamValues // the stream's, for a subtree fetch
	emit   func(walkResult) error
	chunk  walkResult
	bytes  int
}

// add appends an item (a node, or a value blob with a nil node) of size
// bytes, handing the chunk on once it is full.
func (c *chunkBuilder) add(it walkItem, n *node.Node, size int) error {
	if c.chunk.items == nil {
		c.chunk = walkResult{items: make([]walkItem, 0, c.max), nodes: make([]*node.Node, 0, c.max), values: c.values}
	}
	c.chunk.items = append(c.chunk.items, it)
	c.chunk.nodes = append(c.chunk.nodes, n)
	if c.bytes += size; len(c.chunk.items) >= c.max || c.bytes >= walkChunkBytes {
		return c.flush()
	}
	return nil
}

// flush hands on what the chunk holds, if anything.
func (c *chunkBuilder) flush() error {
	if c.chunk.items == nil {
		return nil
	}
	r := c.chunk
	c.chunk, c.bytes = walkResult{}, 0
	return c.emit(r)
}

// recvValues receives, in a subtree stream, the value blobs of leaf n, just
// received: for each out-of-line value in key order, its value index and
// then the index's chunks, each checked against the hash it must have. It
// passes them to add chunks first, then their index, the order they must be
// stored in (a stored index implies its chunks).
func (sy *syncer) recvValues(ex *exchange, n *node.Node, add func(walkItem, *node.Node, int) error) error {
	recv := func(h node.Hash) ([]byte, error) {
		f, err := ex.recv(msgBlob)
		if err != nil {
			return nil, err
		}
		if got := sy.alg().Sum(f.Payload); got != h {
			return nil, fmt.Errorf("%s: %w: blob %s: bytes hash to %s", sy.cl.peer, ErrProtocol, h, got)
		}
		return f.Payload, nil
	}
	for i := 0; i < n.Len(); i++ {
		if p := n.Payload(i); p[0] == 0 {
			continue // inline value
		}
		v := n.Value(i)
		if !v.IsRef {
			continue
		}
		ix, err := recv(v.Ref)
		if err != nil {
			return err
		}
		chunks, _, err := node.DecodeValueIndex(sy.alg(), ix)
		if err != nil {
			return fmt.Errorf("%s: %w: value index %s: %w", sy.cl.peer, ErrProtocol, v.Ref, err)
		}
		for _, c := range chunks {
			b, err := recv(c.Hash)
			if err != nil {
				return err
			}
			if err := add(walkItem{h: c.Hash, blob: b}, nil, len(b)); err != nil {
				return err
			}
		}
		if err := add(walkItem{h: v.Ref, blob: ix, index: true}, nil, len(ix)); err != nil {
			return err
		}
	}
	return nil
}

// verifyNode checks a received node against what was asked for: it must
// decode, hash to the requested hash and stand at the expected level.
// A fetcher passes its own Decoder (see node.Decoder); nil is Decode's.
func (sy *syncer) verifyNode(d *node.Decoder, it walkItem, raw []byte) (*node.Node, error) {
	n, err := d.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: node %s: %w", sy.cl.peer, ErrProtocol, it.h, err)
	}
	if got := n.Hash(); got != it.h {
		return nil, fmt.Errorf("%s: %w: asked for node %s, got bytes hashing to %s", sy.cl.peer, ErrProtocol, it.h, got)
	}
	if it.level >= 0 && n.Level() != it.level {
		return nil, fmt.Errorf("%s: %w: node %s at level %d, expected %d", sy.cl.peer, ErrProtocol, it.h, n.Level(), it.level)
	}
	return n, nil
}

// process queues a verified node's missing children, or stores it.
func (w *walker) process(ctx context.Context, it walkItem, n *node.Node) error {
	sy := w.sy
	if it.blob != nil {
		return w.putValueBlob(ctx, it)
	}
	if it.level < 0 {
		sy.total, sy.records = int64(n.Count()), 0
	}
	sy.nodes++
	sy.res.NodesFetched++
	if n.IsLeaf() {
		var refs []node.Hash
		for i := 0; i < n.Len() && n.Refs() > 0; i++ {
			if p := n.Payload(i); p[0] == 0 {
				continue // inline value: the common case, no decoding needed
			}
			if sy.partial && !sy.sc.Contains(n.Key(i)) {
				continue // outside the scope: the server does not serve it
			}
			if v := n.Value(i); v.IsRef {
				refs = append(refs, v.Ref)
			}
		}
		sy.records += int64(n.Len())
		if len(refs) > 0 && w.values != nil {
			// Its value blobs follow it in the stream.
			w.startBulk(len(n.Raw()))
			w.values.leaf = &leafWait{n: n, hint: it.hint, refs: refs, parent: it.parent}
			return nil
		}
		if len(refs) > 0 {
			w.leaves = append(w.leaves, leafWait{n: n, hint: it.hint, refs: refs, parent: it.parent})
			return nil
		}
		return w.put(ctx, n, it.hint, it.parent)
	}
	if it.self != nil {
		w.pending++ // its children follow in the same stream
		return nil
	}
	p := &pendingNode{n: n, hint: it.hint, parent: it.parent}
	hn := w.hintNode(ctx, it.hint, n.Level(), n.Key(0))
	// hintFor is the hint node's child covering child i's keys.
	hintFor := func(i int) node.Hash {
		if hn == nil {
			return node.Hash{}
		}
		h, _ := hn.Child(min(hn.Search(n.Key(i)), hn.Len()-1))
		return h
	}
	// Look up, in one read of the store, every child the loop below will
	// ask about: a lookup per child costs a fresh Pebble iterator each.
	ask := make([]node.Hash, 0, n.Len())
	askAt := make([]int, 0, n.Len())
	for i := 0; i < n.Len(); i++ {
		c, _ := n.Child(i)
		if sy.opts.ForceWalk || hintFor(i) != c || c.IsZero() {
			ask = append(ask, c)
			askAt = append(askAt, i)
		}
	}
	held := make([]bool, len(ask))
	if !w.empty {
		var err error
		if held, err = sy.store.HasNodes(ask); err != nil {
			return err
		}
	}
	heldAt := make([]bool, n.Len())
	for k, i := range askAt {
		heldAt[i] = held[k]
	}
	below := n.Level() - 1
	w.frontier[below] = slices.Grow(w.frontier[below], n.Len())
	for i := 0; i < n.Len(); i++ {
		c, cnt := n.Child(i)
		clo := it.lo
		if i > 0 {
			clo = n.Key(i - 1)
		}
		hi, open := childHi(n, i, it.open)
		if sy.partial && !sy.sc.Overlaps(clo, hi) {
			sy.records += int64(cnt) // outside the scope: pruned
			continue
		}
		// The hint node's subtree is held whole, so a child equal to the
		// hint's needs no lookup (the common case on a walk against a base).
		// A forced walk (a lost or suspicious client) does not take the
		// shortcut: it checks what the store really holds.
		hint := hintFor(i)
		ok := !sy.opts.ForceWalk && hint == c && !c.IsZero()
		if !ok {
			ok = heldAt[i]
		}
		if ok && sy.partial {
			// A held node was pruned for the interval it had then; deletions
			// next to it may have widened it (a new lower bound, or now the
			// right edge): check its edge children are there for this one.
			var err error
			if ok, err = w.heldPruned(ctx, c, clo, open, true, open); err != nil {
				return err
			}
		}
		if ok && !sy.added.IsEmpty() && sy.added.Overlaps(clo, hi) {
			// Held, but pruned to the old, narrower scope: fetch it again
			// so the walk reaches the added part below it.
			ok = false
		}
		if ok {
			sy.records += int64(cnt) // held already: covered
			continue
		}
		p.missing++
		w.frontier[below] = append(w.frontier[below], walkItem{h: c, hint: hint, level: below, lo: clo, open: open, count: cnt, parent: p})
	}
	if p.missing == 0 {
		return w.put(ctx, n, it.hint, it.parent)
	}
	w.pending++
	return nil
}

// putValueBlob stores a value blob of a streamed leaf, and the leaf once
// the last of its value indexes is stored.
func (w *walker) putValueBlob(ctx context.Context, it walkItem) error {
	l := w.values.leaf
	if l == nil || (it.index && l.refs[0] != it.h) {
		// fetchTrees passes a leaf's blobs right after it, in order.
		return fmt.Errorf("value blob %s out of order in a subtree stream", it.h)
	}
	if _, err := w.b.PutBlob(it.blob); err != nil {
		return err
	}
	w.sy.res.BlobsFetched++
	if !it.index {
		return nil
	}
	if l.refs = l.refs[1:]; len(l.refs) > 0 {
		return nil
	}
	w.values.leaf = nil
	return w.put(ctx, l.n, l.hint, l.parent)
}

// heldPruned reports whether the held node h, at the interval (lo, …] (open:
// the right edge), holds every child the scope needs there. Only the edge
// children's intervals depend on the node's position: child 0's on lo
// (checkLo), the last child's on open (checkOpen); the others' depend on
// h's own keys and were pruned for them when h was stored.
func (w *walker) heldPruned(ctx context.Context, h node.Hash, lo []byte, open, checkLo, checkOpen bool) (bool, error) {
	sy := w.sy
	n, err := sy.store.Node(ctx, h)
	if err != nil {
		return false, nil // unreadable: fetch it again
	}
	if n.IsLeaf() || n.Len() == 0 {
		return true, nil
	}
	for _, i := range []int{0, n.Len() - 1} {
		edgeLo, edgeOpen := checkLo && i == 0, checkOpen && i == n.Len()-1
		if !edgeLo && !edgeOpen {
			continue
		}
		clo := lo
		if i > 0 {
			clo = n.Key(i - 1)
		}
		hi, copen := childHi(n, i, open)
		if !sy.sc.Overlaps(clo, hi) {
			continue
		}
		c, _ := n.Child(i)
		if ok, err := sy.store.HasNode(c); err != nil || !ok {
			return false, err
		}
		if ok, err := w.heldPruned(ctx, c, clo, copen, edgeLo, edgeOpen); err != nil || !ok {
			return false, err
		}
		if n.Len() == 1 {
			break
		}
	}
	return true, nil
}

// childHi returns the upper end of child i's key interval for scope tests:
// its separator, or nil (unbounded) for the last child of a node on the
// tree's right edge, since a search past the greatest key ends there.
func childHi(n *node.Node, i int, open bool) (hi []byte, childOpen bool) {
	if open && i == n.Len()-1 {
		return nil, true
	}
	return n.Key(i), false
}

// flushLeaves fetches the value blobs of waiting leaves, then stores them.
func (w *walker) flushLeaves(ctx context.Context) error {
	if len(w.leaves) == 0 {
		return nil
	}
	w.startBulk(len(w.leaves[0].n.Raw()))
	var refs []node.Hash
	for _, l := range w.leaves {
		refs = append(refs, l.refs...)
	}
	if err := w.sy.fetchBlobs(ctx, w.b, refs); err != nil {
		return err
	}
	for _, l := range w.leaves {
		if err := w.put(ctx, l.n, l.hint, l.parent); err != nil {
			return err
		}
	}
	w.leaves = w.leaves[:0]
	return nil
}

// put stores a verified node whose subtree is complete, then every
// ancestor this completes. A node with a hint (the local node it
// replaces) may be stored as a delta of it: a scattered change rewrites
// few entries of each leaf, and storing the leaves whole would write (and
// have Pebble compact) many times the bytes that changed.
func (w *walker) put(ctx context.Context, n *node.Node, hint node.Hash, parent *pendingNode) error {
	w.startBulk(len(n.Raw()))
	for {
		// The node was decoded and hash-checked on arrival (verifyNode).
		// Its bytes lie in a buffer shared with the frames around it; a
		// bulk load writes them out and drops them, but an ordinary
		// batch's nodes go on to the node cache, which must not keep a
		// whole buffer for each node (it charges a node's own size).
		if !w.bulk {
			n = n.Clone()
		}
		if _, err := w.b.PutDecodedNear(n, hint); err != nil {
			return err
		}
		w.size += len(n.Raw())
		w.count++
		if parent == nil {
			break
		}
		parent.missing--
		if parent.missing > 0 {
			break
		}
		w.pending--
		n, hint, parent = parent.n, parent.hint, parent.parent
	}
	if !w.bulk && (w.size >= walkCommitBytes || w.count >= walkCommitNodes) {
		b := w.b
		w.b = nil
		if err := w.com.submit(b); err != nil {
			return err
		}
		b, err := w.sy.store.NewBatch()
		if err != nil {
			return err
		}
		w.b, w.size, w.count = b, 0, 0
	}
	return nil
}

// startBulk makes the walk's batch a bulk load (tree.Batch.BulkLoad) if
// the walk is a large initial clone. It is called before the walk stores
// anything, node or value blob, with the size of its first leaf; the
// estimate is the records under the root times the bytes per record of
// what the walk has covered so far. The whole walk then goes into that one
// batch, whose nodes tree writes as sorted sstables that Pebble ingests in
// the background, one per 32 MiB, instead of through Pebble's write-ahead
// log and memtable (which write every node twice: to the log, then on
// flush to an sstable); nor does it add them to the node cache. Its spills
// are durable in order, one at a time, and hold children before (or with)
// their parents, so a killed clone keeps its progress in 32 MiB steps; an
// interrupted one keeps all of it, as the batch is committed anyway. As
// nothing was stored before, the ingested sstables overlap nothing in the
// memtable and need less compaction.
func (w *walker) startBulk(size int) {
	if !w.clone {
		return
	}
	w.clone = false
	sy := w.sy
	if sy.records <= 0 || sy.total <= 0 || sy.total/sy.records*int64(size) < walkBulkMin {
		return
	}
	w.bulk = true
	w.b.BulkLoad()
	if bulkHook != nil {
		bulkHook()
	}
}

// hintNode returns the local node at level that covers key, starting from
// the local node h and descending if h stands higher; nil if there is none.
// Hints are best effort: a poor one only makes the delta larger.
func (w *walker) hintNode(ctx context.Context, h node.Hash, level int, key []byte) *node.Node {
	if h.IsZero() || level == 0 {
		return nil
	}
	for {
		n, err := w.sy.store.Node(ctx, h)
		if err != nil || n.Level() < level || n.Len() == 0 {
			return nil
		}
		if n.Level() == level {
			return n
		}
		h, _ = n.Child(min(n.Search(key), n.Len()-1))
	}
}

// bulkHook, set by tests, observes a walk switching to a bulk load.
var bulkHook func()

// walkHook, set by tests, observes a walk's frontier and pending branches
// after each response.
var walkHook func(frontier, pending int)
