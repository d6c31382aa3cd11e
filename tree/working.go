package tree

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// The working set (Options.WorkingRef) lets a small write cost about one
// raw Pebble write: Store.Write records its edits under their own key
// prefix, durably (one fsync in Sync mode) and without touching the tree,
// and keeps them in memory for reads (Store.Lookup). The tree catches up
// in batches: in the background once the set holds WorkingBytes or writes
// pause for WorkingDelay (armLocked), and whenever the ref is read (Ref,
// Root, Update, a batch's expectation), so a root is always the tree of
// every acknowledged write.
// It is the memtable in front of the tree's sorted runs.
//
// Layout: 'w' | generation u64 (big endian) | key → 0 (delete) or 1 | value.
// Writes go to the current generation. A catch-up switches to a new
// generation, applies the old one to the ref in one batch that also
// deletes the old generation's keys, and retries against a moved ref; so
// after a crash every generation left on disk holds writes the ref does
// not have yet, and Open applies them (oldest first) before it returns.
// Readers see a generation being applied until its batch has committed.

// prefixWork keys the working set's edits.
const prefixWork = 'w'

// metaWorkingRef records the ref the working set feeds.
const metaWorkingRef = "working-ref"

// workingSet is the in-memory side of a store's working set.
type workingSet struct {
	ref   string        // the ref it feeds; "" disables it
	limit int           // bytes that start a catch-up
	delay time.Duration // the pause in writes that starts a catch-up

	mu       sync.Mutex
	gen      uint64              // the generation writes go to
	cur      map[string]workEdit // edits of gen
	applying map[string]workEdit // edits being applied (or whose catch-up failed)
	failed   []uint64            // generations of applying after a failed catch-up
	bytes    int                 // key and value bytes in cur
	timer    *time.Timer         // the delayed catch-up, while one is set
	first    time.Time           // when the timer was set: cur's first write
	last     time.Time           // cur's latest write
	kick     chan struct{}       // wakes the background catch-up
	stop     chan struct{}       // closed by Close
	done     chan struct{}       // closed when the background goroutine ends
	flushMu  sync.Mutex          // one catch-up at a time
	lastErr  error               // the background catch-up's last error

	leftApplied int // edits a previous run left that Open applied (for tests)

	guard     func() error // Options.WorkingGuard
	closeOnce sync.Once
}

// workEdit is one pending edit: a value, or a delete.
type workEdit struct {
	value  []byte
	delete bool
}

// Working set defaults.
const (
	defaultWorkingBytes = 4 << 20
	defaultWorkingDelay = 50 * time.Millisecond
	// maxWorkingValue is the largest value Write takes: a larger one is
	// applied to the tree at once (it would be chunked out of line anyway,
	// and holding it in memory until the catch-up would cost more).
	maxWorkingValue = 64 << 10
)

func workKey(gen uint64, key []byte) []byte {
	k := make([]byte, 0, 9+len(key))
	k = append(k, prefixWork)
	k = binary.BigEndian.AppendUint64(k, gen)
	return append(k, key...)
}

func workGenBounds(gen uint64) (lo, hi []byte) {
	return workKey(gen, nil), workKey(gen+1, nil)
}

// initWorking sets up the working set of a store being opened and applies
// the generations a crash left behind.
func (s *Store) initWorking(o Options) error {
	w := &s.work
	// Edits a crash left behind belong to the ref they were written for,
	// recorded when a store is first opened with it: apply them there
	// before recording another.
	stored, err := s.getMeta(metaWorkingRef)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	w.ref = string(stored)
	if w.ref == "" {
		w.ref = o.WorkingRef
	}
	gens, left, err := s.applyLeftWork()
	if err != nil {
		// Keep them (on disk, and in memory below if the ref is the
		// working ref): a store that cannot apply them now still opens,
		// and every read of the ref reports the error until one can.
		w.lastErr = err
		s.failure.log.Error("arbor store: the working set left by the last run does not apply; kept for a later catch-up",
			"dir", s.dir, "ref", w.ref, "err", err)
	}
	if o.WorkingRef != "" && string(stored) != o.WorkingRef && (err == nil || w.ref == o.WorkingRef) {
		if err := s.db.Set(metaKey(metaWorkingRef), []byte(o.WorkingRef), pebble.Sync); err != nil {
			return fmt.Errorf("record the working ref: %w", err)
		}
	}
	leftRef := w.ref
	w.ref = o.WorkingRef
	if w.ref == "" {
		return nil
	}
	w.limit, w.delay, w.guard = o.WorkingBytes, o.WorkingDelay, o.WorkingGuard
	if w.limit <= 0 {
		w.limit = defaultWorkingBytes
	}
	if w.delay <= 0 {
		w.delay = defaultWorkingDelay
	}
	w.cur = map[string]workEdit{}
	if err != nil && leftRef == w.ref {
		w.applying, w.failed = left, gens
	}
	w.kick = make(chan struct{}, 1)
	w.stop = make(chan struct{})
	w.done = make(chan struct{})
	go s.catchUpLoop()
	return nil
}

// applyLeftWork applies the working-set generations a previous run left on
// disk to the working ref (s.work.ref), oldest first, and sets the next
// generation number past them.
func (s *Store) applyLeftWork() (gens []uint64, merged map[string]workEdit, err error) {
	w := &s.work
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixWork}, UpperBound: []byte{prefixWork + 1}})
	if err != nil {
		return nil, nil, err
	}
	merged = map[string]workEdit{}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) < 10 {
			it.Close()
			return nil, nil, fmt.Errorf("working set key %x: %w", k, node.ErrCorrupt)
		}
		g := binary.BigEndian.Uint64(k[1:9])
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, nil, fmt.Errorf("read working set: %w", err)
		}
		e, err := decodeWorkEdit(v)
		if err != nil {
			it.Close()
			return nil, nil, fmt.Errorf("working set key %q: %w", k[9:], err)
		}
		if len(gens) == 0 || gens[len(gens)-1] != g {
			gens = append(gens, g)
		}
		merged[string(k[9:])] = e // generations ascend (big endian): later edits win
	}
	if err := it.Close(); err != nil {
		return nil, nil, err
	}
	if len(gens) == 0 {
		return nil, nil, nil
	}
	w.gen = gens[len(gens)-1] + 1
	if w.ref == "" {
		return gens, merged, fmt.Errorf("%w: working set edits on disk, and no record of their ref", node.ErrCorrupt)
	}
	if err := s.applyWork(context.Background(), gens, merged); err != nil {
		return gens, merged, fmt.Errorf("apply the working set left by the last run: %w", err)
	}
	w.leftApplied = len(merged)
	return gens, merged, nil
}

func decodeWorkEdit(v []byte) (workEdit, error) {
	switch {
	case len(v) == 1 && v[0] == 0:
		return workEdit{delete: true}, nil
	case len(v) >= 1 && v[0] == 1:
		return workEdit{value: bytes.Clone(v[1:])}, nil
	}
	return workEdit{}, fmt.Errorf("%w: bad working set entry", node.ErrCorrupt)
}

// ErrNoWorkingSet reports Store.Write on a store opened without
// Options.WorkingRef, or a write Options.WorkingGuard declined: the caller
// applies it to the tree instead.
var ErrNoWorkingSet = errors.New("store has no working set")

// Write records edits of the working ref (Options.WorkingRef) in the
// working set: durably when it returns (unless NoSync), atomically, and
// visible at once to Lookup and, through a catch-up, to every reader of the
// ref. Later edits of a key override earlier ones. An edit whose value is
// over 64 KiB is applied to the tree at once instead (with the others,
// after the working set). Write fails with ErrNoWorkingSet if the store has
// none.
func (s *Store) Write(ctx context.Context, edits []Edit) error {
	w := &s.work
	if w.ref == "" {
		return ErrNoWorkingSet
	}
	if len(edits) == 0 {
		return nil
	}
	big := s.checkAddrs // a checked store applies at once: its check must decide before the ack
	for _, e := range edits {
		if err := checkKey(e.Key); err != nil {
			return err
		}
		if !e.Delete && len(e.Value) > maxWorkingValue {
			big = true
		}
		if !e.Delete && len(e.Value) > node.MaxValueSize {
			return fmt.Errorf("%w: %d bytes exceeds %d", ErrValueTooLarge, len(e.Value), node.MaxValueSize)
		}
	}
	if big {
		_, err := s.Update(ctx, w.ref, edits) // Update reads the ref: the working set goes first
		return err
	}
	wait, err := s.record(edits)
	if err != nil || !wait {
		return err
	}
	// Writes outrun the catch-up: this one waits for it, which bounds the
	// set's memory (and the work a reader of the ref may meet). The write
	// is durable already, whatever the catch-up does.
	if err := s.CatchUp(ctx); err != nil {
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
	}
	return nil
}

// record writes edits to the working set; wait reports a set so full that
// the writer should wait for a catch-up.
func (s *Store) record(edits []Edit) (wait bool, err error) {
	w := &s.work
	done, err := s.use()
	if err != nil {
		return false, err
	}
	defer done()
	// Insert in key order (a later edit of a key stays after an earlier
	// one): Pebble's memtable finds each key's place in its skiplist from
	// the top, and in order the searches walk the nodes the previous one
	// just read, which costs about half as much as scattered searches.
	order := make([]int32, len(edits))
	for i := range order {
		order[i] = int32(i)
	}
	sorted := slices.IsSortedFunc(edits, func(a, b Edit) int { return bytes.Compare(a.Key, b.Key) })
	if !sorted {
		slices.SortFunc(order, func(i, j int32) int {
			if c := bytes.Compare(edits[i].Key, edits[j].Key); c != 0 {
				return c
			}
			return cmp.Compare(i, j)
		})
	}
	// The set keeps the write's keys in one string and its values in one
	// buffer, sliced per edit, rather than two allocations per edit.
	keyBytes, valBytes := 0, 0
	for _, e := range edits {
		keyBytes += len(e.Key)
		if !e.Delete {
			valBytes += len(e.Value)
		}
	}
	keyBuf := make([]byte, 0, keyBytes)
	vals := make([]byte, 0, valBytes)
	for _, i := range order {
		keyBuf = append(keyBuf, edits[i].Key...)
		if !edits[i].Delete {
			vals = append(vals, edits[i].Value...)
		}
	}
	keys := string(keyBuf)
	pb := s.db.NewBatchWithSize(len(edits)*(16+9+1) + keyBytes + valBytes)
	defer pb.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.guard != nil {
		// Under w.mu, which a commit that moves the working ref holds too,
		// so the guard sees the state the write will be applied to.
		if err := w.guard(); err != nil {
			return false, err
		}
	}
	size := 0
	for _, i := range order {
		e := &edits[i]
		vlen := 1
		if !e.Delete {
			vlen += len(e.Value)
		}
		op := pb.SetDeferred(9+len(e.Key), vlen)
		op.Key[0] = prefixWork
		binary.BigEndian.PutUint64(op.Key[1:9], w.gen)
		copy(op.Key[9:], e.Key)
		if e.Delete {
			op.Value[0] = 0
		} else {
			op.Value[0] = 1
			copy(op.Value[1:], e.Value)
		}
		if err := op.Finish(); err != nil {
			return false, err
		}
		size += len(e.Key) + len(e.Value)
	}
	// The commit happens under w.mu, so the order of writes in memory is
	// the order in Pebble, which a crash replays.
	if err := pb.Commit(s.wopts); err != nil {
		return false, fmt.Errorf("store %s: write: %w", s.dir, err)
	}
	ko, vo := 0, 0
	for _, i := range order {
		e := &edits[i]
		k := keys[ko : ko+len(e.Key)]
		ko += len(e.Key)
		we := workEdit{delete: e.Delete}
		if !e.Delete {
			we.value = vals[vo : vo+len(e.Value) : vo+len(e.Value)]
			vo += len(e.Value)
		}
		w.cur[k] = we
	}
	w.bytes += size
	switch {
	case w.bytes >= maxWorkingFactor*w.limit:
		return true, nil
	case w.bytes >= w.limit:
		select {
		case w.kick <- struct{}{}:
		default:
		}
	default:
		w.armLocked()
	}
	return false, nil
}

// armLocked schedules the background catch-up of a write just recorded
// (w.mu held): once writes pause for w.delay, and at the latest
// maxWorkingDelayFactor × w.delay after the first write the set holds.
// While writes stream in, a catch-up would rewrite the leaves they touch
// only for the next one to rewrite them again (with scattered keys, a
// catch-up rewrites nearly every leaf of a small tree however few its
// edits), and it would take a core from the writer; WorkingBytes and the
// readers of the ref bound how far the tree falls behind meanwhile.
func (w *workingSet) armLocked() {
	now := time.Now()
	w.last = now
	if w.timer != nil {
		return // set for the first write: it checks w.last when it fires
	}
	w.first = now
	var t *time.Timer
	t = time.AfterFunc(w.delay, func() {
		w.mu.Lock()
		if w.timer != t {
			w.mu.Unlock() // stopped by a catch-up that took the set
			return
		}
		due := w.last.Add(w.delay)
		if limit := w.first.Add(maxWorkingDelayFactor * w.delay); due.After(limit) {
			due = limit
		}
		if wait := time.Until(due); wait > 0 {
			t.Reset(wait)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		select {
		case w.kick <- struct{}{}:
		default:
		}
	})
	w.timer = t
}

// maxWorkingDelayFactor × WorkingDelay is the longest a write waits for a
// background catch-up while later writes keep coming.
const maxWorkingDelayFactor = 10

// maxWorkingFactor × WorkingBytes is the most the working set holds before
// a write waits for the catch-up.
const maxWorkingFactor = 4

// Lookup returns key's value in the tree at ref, counting the working set
// if ref is the working ref, without making the tree catch up. It returns
// an error wrapping ErrNotFound if the key is absent.
func (s *Store) Lookup(ctx context.Context, ref string, key []byte) ([]byte, error) {
	if w := &s.work; ref == w.ref && ref != "" {
		w.mu.Lock()
		e, ok := w.cur[string(key)]
		if !ok {
			e, ok = w.applying[string(key)]
		}
		w.mu.Unlock()
		if ok {
			if e.delete {
				return nil, fmt.Errorf("key %q: %w", key, ErrNotFound)
			}
			return bytes.Clone(e.value), nil
		}
	}
	// A catch-up clears its generation from memory only after its commit,
	// so reading the ref now finds the key's value in the tree.
	release := s.PreventGC()
	defer release()
	root, ok, err := s.rawRef(ref)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("key %q: %w", key, ErrNotFound)
	}
	v, err := s.GetValue(ctx, root, key)
	if err != nil {
		return nil, err
	}
	if !v.IsRef {
		// The caller owns the result; Get's may alias the node cache.
		return bytes.Clone(v.Inline), nil
	}
	return s.ReadValue(ctx, v)
}

// pendingWork reports whether the working set holds edits the ref lacks,
// including those a catch-up is applying: a reader of the ref must wait for
// that catch-up, or a write based on what it read could commit first and
// the catch-up then apply older edits on top of it.
func (s *Store) pendingWork() bool {
	w := &s.work
	if w.ref == "" {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.cur) > 0 || w.applying != nil
}

// CatchUp applies the working set to the working ref now. Reading the ref
// (Ref, Root) does it too.
func (s *Store) CatchUp(ctx context.Context) error {
	w := &s.work
	if w.ref == "" {
		return nil
	}
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	if len(w.cur) == 0 && len(w.applying) == 0 {
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
		w.mu.Unlock()
		return nil
	}
	// The edits of an earlier catch-up that failed are still applying:
	// go again with them, the current generation's edits on top.
	edits := w.applying
	if edits == nil {
		edits = w.cur // nothing to merge: no copy
	} else {
		for k, e := range w.cur {
			edits[k] = e
		}
	}
	gens := append(w.failed, w.gen)
	w.applying, w.cur, w.bytes = edits, map[string]workEdit{}, 0
	w.gen++
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.mu.Unlock()
	err := s.applyWork(ctx, gens, edits)
	w.mu.Lock()
	if err != nil {
		w.failed = gens // still on disk, still visible through applying
	} else {
		w.applying, w.failed = nil, nil
	}
	w.mu.Unlock()
	return err
}

// applyWork applies edits, the merged edits of generations gens, to the
// working ref and deletes those generations from disk, in one batch.
func (s *Store) applyWork(ctx context.Context, gens []uint64, edits map[string]workEdit) error {
	ref := s.work.ref
	for {
		b, err := s.NewBatch()
		if err != nil {
			return err
		}
		old, ok, err := s.rawRef(ref)
		if err != nil {
			b.Discard()
			return err
		}
		root := old
		if !ok {
			root = s.EmptyRoot()
		}
		les, err := b.workEdits(edits)
		if err != nil {
			b.Discard()
			return err
		}
		newRoot, err := b.applyStored(ctx, root, les)
		if err != nil {
			b.Discard()
			return err
		}
		b.ExpectRef(ref, old, ok)
		b.SetRef(ref, newRoot)
		b.workDone = gens
		err = b.Commit(ctx)
		if errors.Is(err, ErrRefMoved) {
			continue
		}
		return err
	}
}

// workEdits turns a working set's edits into the level edits of an Apply,
// in key order, checked as Apply checks them (a set that Open read back
// from disk was not). Keys and inline payloads
// share one buffer: a catch-up holds tens of thousands of edits, and one
// allocation each cost it more than the sort.
func (b *Batch) workEdits(edits map[string]workEdit) ([]levelEdit, error) {
	keys := make([]string, 0, len(edits))
	size := 0
	for k, e := range edits {
		keys = append(keys, k)
		size += len(k)
		if !e.delete && len(e.value) <= node.MaxInlineValue {
			size += 1 + len(e.value)
		}
	}
	slices.Sort(keys)
	buf := make([]byte, 0, size)
	les := make([]levelEdit, len(keys))
	for i, k := range keys {
		e := edits[k]
		if len(k) == 0 || len(k) > node.MaxKeySize {
			return nil, fmt.Errorf("%w: key of %d bytes (limit %d)", ErrKeyTooLarge, len(k), node.MaxKeySize)
		}
		buf = append(buf, k...)
		les[i].key = buf[len(buf)-len(k) : len(buf) : len(buf)]
		if e.delete {
			continue
		}
		if len(e.value) > node.MaxInlineValue {
			v, err := b.storeValue(e.value)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
			les[i].payload = v.AppendPayload(nil)
			continue
		}
		n := len(buf)
		buf = node.InlineValue(e.value).AppendPayload(buf)
		les[i].payload = buf[n:len(buf):len(buf)]
	}
	return les, nil
}

// catchUpLoop applies the working set in the background when Write asks.
func (s *Store) catchUpLoop() {
	w := &s.work
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		err := s.CatchUp(context.Background())
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
	}
}

// closeWorking stops the background catch-up and applies what is left
// (what is left is durable anyway: the next Open applies it).
func (s *Store) closeWorking() error {
	w := &s.work
	if w.ref == "" {
		return nil
	}
	w.closeOnce.Do(func() { close(w.stop) })
	<-w.done
	return s.CatchUp(context.Background())
}
