package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/arbor-sync/arbor/tree"
)

// KeySize is the length of every workload key in bytes.
const KeySize = 16

// Kinds of change in a workload, in the shares the issue fixes: 60% of the
// changed records are updates, 20% inserts and 20% deletes.
const (
	kindNone   uint8 = iota
	kindUpdate       // the record gets a new value
	kindInsert       // a new record is inserted right after this one
	kindDelete       // the record is deleted
)

// Workload is W(n, d): N records with 16-byte keys and ValueSize-byte
// pseudo-random values derived from Seed, and a changed version of them in
// which D records differ (60% updates, 20% inserts, 20% deletes), scattered
// over the key space or, when Clustered, all in one contiguous key range.
//
// Record i has the key BE64(i<<8) ‖ BE64(mix(seed, i)): keys sort by index,
// so the base data set is generated in key order without sorting, and an
// insert after record i takes the key BE64(i<<8|0x80) ‖ …, which sorts
// between records i and i+1. Values are incompressible.
type Workload struct {
	N, D      int
	ValueSize int
	Seed      uint64
	Clustered bool

	kind      []uint8 // per base record: kindNone, kindUpdate, kindInsert or kindDelete
	u, i, del int
}

// NewWorkload returns W(n, d) and picks which records change. It fails if
// d > n.
func NewWorkload(n, d, valueSize int, seed uint64, clustered bool) (*Workload, error) {
	if n <= 0 || d < 0 || d > n || valueSize <= 0 {
		return nil, fmt.Errorf("workload: bad W(n=%d, d=%d) with %d-byte values", n, d, valueSize)
	}
	w := &Workload{N: n, D: d, ValueSize: valueSize, Seed: seed, Clustered: clustered, kind: make([]uint8, n)}
	w.u = d * 60 / 100
	w.i = d * 20 / 100
	w.del = d - w.u - w.i
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	kinds := make([]uint8, 0, d)
	for range w.u {
		kinds = append(kinds, kindUpdate)
	}
	for range w.i {
		kinds = append(kinds, kindInsert)
	}
	for range w.del {
		kinds = append(kinds, kindDelete)
	}
	r.Shuffle(len(kinds), func(a, b int) { kinds[a], kinds[b] = kinds[b], kinds[a] })
	if clustered {
		start := r.IntN(n - d + 1)
		for j, k := range kinds {
			w.kind[start+j] = k
		}
		return w, nil
	}
	// Scattered: d distinct indices drawn uniformly (rejection sampling is
	// bounded because d ≤ n; for d > n/2 pick the complement instead).
	if d <= n/2 {
		for j := 0; j < len(kinds); {
			x := r.IntN(n)
			if w.kind[x] == kindNone {
				w.kind[x] = kinds[j]
				j++
			}
		}
		return w, nil
	}
	chosen := make([]bool, n)
	for i := range chosen {
		chosen[i] = true
	}
	for left := n - d; left > 0; {
		x := r.IntN(n)
		if chosen[x] {
			chosen[x] = false
			left--
		}
	}
	j := 0
	for x, c := range chosen {
		if c {
			w.kind[x] = kinds[j]
			j++
		}
	}
	return w, nil
}

// Counts returns how many updates, inserts and deletes the workload makes.
func (w *Workload) Counts() (updates, inserts, deletes int) { return w.u, w.i, w.del }

// ChangedN returns the number of records on the changed side.
func (w *Workload) ChangedN() int { return w.N + w.i - w.del }

// IdealBytes is the size of the changed records: key and new value of each
// update and insert, and the key of each delete. No sync can move fewer
// payload bytes.
func (w *Workload) IdealBytes() int64 {
	return int64(w.u+w.i)*int64(KeySize+w.ValueSize) + int64(w.del)*KeySize
}

// PushIdealBytes is IdealBytes of the inverse change (changed side back to
// base): its inserts are W's deletes and the other way round.
func (w *Workload) PushIdealBytes() int64 {
	return int64(w.u+w.del)*int64(KeySize+w.ValueSize) + int64(w.i)*KeySize
}

// DatasetBytes is the size of the base records' keys and values.
func (w *Workload) DatasetBytes() int64 { return int64(w.N) * int64(KeySize+w.ValueSize) }

// Key writes the key of base record i into dst (16 bytes) and returns it.
func (w *Workload) Key(dst []byte, i int) []byte {
	if cap(dst) < KeySize {
		dst = make([]byte, KeySize)
	}
	dst = dst[:KeySize]
	binary.BigEndian.PutUint64(dst, uint64(i)<<8)
	binary.BigEndian.PutUint64(dst[8:], mix(w.Seed, uint64(i)))
	return dst
}

// insertKey writes the key of the record inserted after base record i.
func (w *Workload) insertKey(dst []byte, i int) []byte {
	if cap(dst) < KeySize {
		dst = make([]byte, KeySize)
	}
	dst = dst[:KeySize]
	binary.BigEndian.PutUint64(dst, uint64(i)<<8|0x80)
	binary.BigEndian.PutUint64(dst[8:], mix(w.Seed^0x1a5e47, uint64(i)))
	return dst
}

// Value writes version v of record i's value into dst and returns it.
// Version 0 is the base value, 1 the changed side's, 2 and up are used by
// update benchmarks.
func (w *Workload) Value(dst []byte, i int, v uint64) []byte {
	if cap(dst) < w.ValueSize {
		dst = make([]byte, w.ValueSize)
	}
	dst = dst[:w.ValueSize]
	s := mix(w.Seed^v*0x9e3779b97f4a7c15, uint64(i))
	for off := 0; off < len(dst); off += 8 {
		s = mix(s, uint64(off))
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], s)
		copy(dst[off:], b[:])
	}
	return dst
}

// Base calls fn for every base record in key order. key and value are
// reused between calls.
func (w *Workload) Base(fn func(key, value []byte) error) error {
	key, val := make([]byte, KeySize), make([]byte, w.ValueSize)
	for i := range w.N {
		if err := fn(w.Key(key, i), w.Value(val, i, 0)); err != nil {
			return err
		}
	}
	return nil
}

// Changed calls fn for every record of the changed side in key order.
func (w *Workload) Changed(fn func(key, value []byte) error) error {
	key, val := make([]byte, KeySize), make([]byte, w.ValueSize)
	for i := range w.N {
		switch w.kind[i] {
		case kindDelete:
			continue
		case kindUpdate:
			if err := fn(w.Key(key, i), w.Value(val, i, 1)); err != nil {
				return err
			}
		default:
			if err := fn(w.Key(key, i), w.Value(val, i, 0)); err != nil {
				return err
			}
		}
		if w.kind[i] == kindInsert {
			if err := fn(w.insertKey(key, i), w.Value(val, w.N+i, 1)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Edits returns the D edits that turn the base side into the changed side,
// in key order.
func (w *Workload) Edits() []tree.Edit {
	out := make([]tree.Edit, 0, w.D)
	for i := range w.N {
		switch w.kind[i] {
		case kindUpdate:
			out = append(out, tree.Edit{Key: w.Key(nil, i), Value: w.Value(nil, i, 1)})
		case kindDelete:
			out = append(out, tree.Edit{Key: w.Key(nil, i), Delete: true})
		case kindInsert:
			out = append(out, tree.Edit{Key: w.insertKey(nil, i), Value: w.Value(nil, w.N+i, 1)})
		}
	}
	return out
}

// mix is splitmix64's finaliser of a ^ b·φ: a fast, well-spread hash.
func mix(a, b uint64) uint64 {
	z := a ^ (b+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
