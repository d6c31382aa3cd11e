package cluster

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// index maps each address to the packs holding it, in a local Pebble
// database (bounded memory whatever the dataset's size). It is a cache of
// the pack indexes in the bucket: a server rebuilds what it lacks from
// them, and a lost index directory costs only those reads.
//
//	'e' kind hash pack(8) -> uvarint off | uvarint len
//	'p' pack(8)           -> kind|hash of each entry (to drop them with the pack)
type index struct {
	db *pebble.DB
}

func openIndex(dir string, log *slog.Logger) (*index, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLog{log}})
	if err != nil {
		return nil, fmt.Errorf("cluster: open index %s: %w", dir, err)
	}
	return &index{db: db}, nil
}

func (x *index) close() error { return x.db.Close() }

// pebbleLog keeps Pebble's routine messages (WAL replays) off the
// process's stderr and sends its errors to the cluster's log.
type pebbleLog struct{ log *slog.Logger }

func (pebbleLog) Infof(string, ...any) {}

func (l pebbleLog) Errorf(format string, args ...any) {
	l.log.Error("arbor cluster: pack index: " + fmt.Sprintf(format, args...))
}

func (l pebbleLog) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf("pebble: "+format, args...)
	l.log.Error("arbor cluster: pack index: fatal", "err", msg)
	panic(msg)
}

func entryKey(dst []byte, blob bool, h node.Hash) []byte {
	k := byte(kindNode)
	if blob {
		k = kindBlob
	}
	dst = append(dst, 'e', k)
	return h.Alg().Append(dst, h)
}

func packKey(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'p'}, id) }

// has reports whether pack id is indexed.
func (x *index) has(id uint64) (bool, error) {
	_, c, err := x.db.Get(packKey(id))
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.Close()
	return true, nil
}

// add indexes pack id's entries.
func (x *index) add(id uint64, es []packEntry) error {
	b := x.db.NewBatch()
	defer b.Close()
	var list []byte
	for _, e := range es {
		k := entryKey(nil, e.blob, e.hash)
		list = append(list, k[1:]...)
		k = binary.BigEndian.AppendUint64(k, id)
		v := binary.AppendUvarint(nil, e.off)
		v = binary.AppendUvarint(v, e.len)
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
	}
	if err := b.Set(packKey(id), list, nil); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// drop forgets pack id's entries.
func (x *index) drop(id uint64, alg node.Alg) error {
	list, c, err := x.db.Get(packKey(id))
	if err == pebble.ErrNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	list = bytes.Clone(list)
	c.Close()
	b := x.db.NewBatch()
	defer b.Close()
	w := 1 + alg.Size()
	for len(list) >= w {
		k := append([]byte{'e'}, list[:w]...)
		k = binary.BigEndian.AppendUint64(k, id)
		if err := b.Delete(k, nil); err != nil {
			return err
		}
		list = list[w:]
	}
	if err := b.Delete(packKey(id), nil); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// location is where one entry lies.
type location struct {
	pack     uint64
	off, len uint64
}

// lookup returns where each hash lies (ok false where no pack holds it).
func (x *index) lookup(blob bool, hs []node.Hash) ([]location, []bool, error) {
	it, err := x.db.NewIter(nil)
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	locs := make([]location, len(hs))
	found := make([]bool, len(hs))
	var key []byte
	for i, h := range hs {
		key = entryKey(key[:0], blob, h)
		if !it.SeekGE(key) || !bytes.HasPrefix(it.Key(), key) || len(it.Key()) != len(key)+8 {
			continue
		}
		v := it.Value()
		off, k := binary.Uvarint(v)
		if k <= 0 {
			return nil, nil, fmt.Errorf("cluster: index entry %s: %w", h, ErrCorruptPack)
		}
		n, k2 := binary.Uvarint(v[k:])
		if k2 <= 0 {
			return nil, nil, fmt.Errorf("cluster: index entry %s: %w", h, ErrCorruptPack)
		}
		locs[i] = location{pack: binary.BigEndian.Uint64(it.Key()[len(key):]), off: off, len: n}
		found[i] = true
	}
	return locs, found, it.Error()
}

// packs lists the indexed packs.
func (x *index) packs() (map[uint64]bool, error) {
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'p'}, UpperBound: []byte{'q'}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[uint64]bool{}
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) == 9 {
			out[binary.BigEndian.Uint64(it.Key()[1:])] = true
		}
	}
	return out, it.Error()
}

// entries returns the kind|hash list of pack id (nil if not indexed).
func (x *index) entries(id uint64, alg node.Alg) ([]packEntry, error) {
	list, c, err := x.db.Get(packKey(id))
	if err == pebble.ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	w := 1 + alg.Size()
	var out []packEntry
	for len(list) >= w {
		h, _ := alg.HashOf(list[1:w])
		out = append(out, packEntry{blob: list[0] == kindBlob, hash: h})
		list = list[w:]
	}
	return out, nil
}
