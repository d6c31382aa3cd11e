package tree

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
)

// Builder builds a tree bottom-up from records in strictly ascending key
// order, writing each node once. It uses memory for one node per level.
// It is the fast path for imports and clones; the result is the same tree
// Apply would build from the same records.
type Builder struct {
	ctx     context.Context
	b       *Batch
	levels  []*levelBuilder
	lastKey []byte
	n       uint64
	err     error
	slab    []byte // free space for copies of keys and payloads
}

// builderSlab is the size of the blocks Builder copies records into: one
// allocation per block instead of one per record. A block lives while any
// pending node entry points into it.
const builderSlab = 64 << 10

type levelBuilder struct {
	sp      *chunker.Splitter
	pend    []node.Entry
	count   uint64
	emitted int
}

// NewBuilder starts a bulk build whose nodes go into the batch.
//
// A bulk load that outgrows one spill (see Batch) writes its nodes as
// sorted sstables ingested into Pebble, bypassing Pebble's write-ahead log
// and memtable; like any spill they are unreferenced until the commit.
func (b *Batch) NewBuilder(ctx context.Context) *Builder {
	b.ingest = true
	return &Builder{ctx: ctx, b: b}
}

// Add appends a record. Keys must be strictly ascending. key and value are
// copied.
func (bl *Builder) Add(key, value []byte) error {
	if bl.err != nil {
		return bl.err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if bl.n > 0 && bytes.Compare(bl.lastKey, key) >= 0 {
		return fmt.Errorf("%w: %q after %q", ErrUnsorted, key, bl.lastKey)
	}
	v, err := bl.b.StoreValue(value)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return bl.AddValue(key, v)
}

// AddValue appends a record whose value is already in stored form. It
// rejects an empty or oversized key and a malformed stored value (see
// Batch.ApplyValues), so that no unreadable node is written.
func (bl *Builder) AddValue(key []byte, v node.Value) error {
	if bl.err != nil {
		return bl.err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkStoredValue(bl.b.s.alg, v); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	if bl.n > 0 && bytes.Compare(bl.lastKey, key) >= 0 {
		return fmt.Errorf("%w: %q after %q", ErrUnsorted, key, bl.lastKey)
	}
	if bl.n%4096 == 0 {
		if err := bl.ctx.Err(); err != nil {
			return err
		}
	}
	// Copy the key and payload (the node encoder copies them again), so the
	// caller may reuse its buffers. Records are carved from a shared slab.
	need := len(key) + len(v.Inline) + 1 + node.MaxHashSize + binary.MaxVarintLen64
	if need > cap(bl.slab)-len(bl.slab) {
		bl.slab = make([]byte, 0, max(builderSlab, need))
	}
	start := len(bl.slab)
	bl.slab = append(bl.slab, key...)
	bl.slab = v.AppendPayload(bl.slab)
	buf := bl.slab[start:len(bl.slab):len(bl.slab)]
	k := buf[:len(key):len(key)]
	bl.lastKey = k
	bl.n++
	bl.err = bl.add(0, node.Entry{Key: k, Payload: buf[len(key):]}, 1)
	return bl.err
}

// Count returns the number of records added so far.
func (bl *Builder) Count() uint64 { return bl.n }

func (bl *Builder) add(level int, e node.Entry, count uint64) error {
	if level == len(bl.levels) {
		bl.levels = append(bl.levels, &levelBuilder{sp: chunker.NewSplitter(bl.b.s.cfg, level)})
	}
	lb := bl.levels[level]
	lb.pend = append(lb.pend, e)
	lb.count += count
	if lb.sp.Next(e) {
		return bl.emit(level)
	}
	return nil
}

func (bl *Builder) emit(level int) error {
	lb := bl.levels[level]
	h, err := bl.b.putBuilt(bl.ctx, node.Build(bl.b.s.alg, level, lb.pend), node.Hash{})
	if err != nil {
		return err
	}
	last := lb.pend[len(lb.pend)-1].Key
	count := lb.count
	lb.pend, lb.count = lb.pend[:0], 0
	lb.emitted++
	return bl.add(level+1, node.Entry{Key: last, Payload: node.AppendChildPayload(nil, h, count)}, count)
}

// Finish writes the remaining nodes and returns the root. The Builder is
// unusable afterwards.
func (bl *Builder) Finish() (node.Hash, error) {
	if bl.err != nil {
		return node.Hash{}, bl.err
	}
	bl.err = fmt.Errorf("tree: builder already finished")
	for level := 0; level < len(bl.levels); level++ {
		lb := bl.levels[level]
		if level == len(bl.levels)-1 && lb.emitted == 0 {
			// The only node of the top level is the root.
			h, err := bl.b.putBuilt(bl.ctx, node.Build(bl.b.s.alg, level, lb.pend), node.Hash{})
			if err != nil {
				return node.Hash{}, err
			}
			m := &mutator{ctx: bl.ctx, cfg: bl.b.s.cfg, b: bl.b}
			return m.collapse(h)
		}
		if len(lb.pend) > 0 {
			if err := bl.emit(level); err != nil {
				return node.Hash{}, err
			}
		}
	}
	return bl.b.s.EmptyRoot(), nil
}
