package arbor

import (
	"context"
	"iter"
)

// Record is one key/value pair, as yielded by DB.All and DB.Scan.
type Record struct {
	Key, Value []byte
}

// All returns an iterator over every record of the current tree, in
// ascending key order, for use with range:
//
//	for rec, err := range db.All(ctx) {
//		if err != nil {
//			return err
//		}
//		fmt.Printf("%s=%s\n", rec.Key, rec.Value)
//	}
//
// It is Scan with the whole key space; see Scan for how errors, snapshots
// and the lifetime of the yielded slices work.
func (db *DB) All(ctx context.Context) iter.Seq2[Record, error] {
	return db.Scan(ctx, Range{})
}

// Scan returns an iterator over the records in r, in ascending key order:
// the range-over-func companion of NewIterator, with the same Range (a
// Prefix, a [Start, End) interval, or both intersected). On a partial
// replica only the part of r inside its scope is visited.
//
// Errors are yielded, not returned: a pair with a nil error carries a
// record; a pair with a non-nil error (a closed DB, a cancelled ctx, a
// missing or corrupt node) carries the zero Record, is the last pair
// yielded, and means the records before it may be incomplete. The
// pattern is the same as DB.Diff's:
//
//	for rec, err := range db.Scan(ctx, arbor.Range{Prefix: []byte("user/")}) {
//		if err != nil {
//			return err
//		}
//		use(rec.Key, rec.Value)
//	}
//
// Each range statement over the returned iterator reads one snapshot: the
// current tree when the loop starts (not when Scan is called); ranging over
// it again reads the tree of that moment. Writes made while the loop runs,
// by the loop body or by other goroutines, are not seen by it; the loop
// body may write to the DB. Leaving the loop early (break, return, a
// panic) releases the underlying Iterator at once. While the loop runs
// the DB holds off garbage collection (GC waits for it), as an open
// Iterator does.
//
// rec.Key and rec.Value are valid only during the iteration of the loop
// body that receives them and must not be modified; use bytes.Clone to
// keep them.
func (db *DB) Scan(ctx context.Context, r Range) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		it := db.NewIterator(ctx, r)
		defer it.Close() // on break, and if the loop body panics
		for it.Next() {
			if !yield(Record{Key: it.Key(), Value: it.Value()}, nil) {
				return
			}
		}
		if err := it.Close(); err != nil {
			yield(Record{}, err)
		}
	}
}
