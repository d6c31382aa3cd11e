package tree

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// Address checks (Options.CheckAddresses).
//
// xxh3 is not collision resistant, so a client that chooses records could
// make a node or blob whose hash equals that of a different one already
// stored. Pebble's Set would then replace the stored bytes, and every tree
// using that address would change. A store with CheckAddresses refuses
// such a write with ErrAddressConflict:
//
//   - a batch *claims* each address it is about to write, with the bytes,
//     in a store-wide table, until those bytes are committed to Pebble (a
//     spill, a parallel Apply worker's write, the commit) or the batch
//     ends. A claim by the same batch or another one with different bytes
//     is a conflict.
//   - after claiming, the batch probes the store for the address (an
//     iterator's SeekPrefixGE, which consults the bloom filters and loads
//     no value); only if the address is stored does it read the stored
//     bytes (a node stored as a delta is rebuilt, which checks the rebuilt
//     node's hash) and compare them.
//
// Claim first, probe second: of two batches writing one address, either
// the later claimer sees the earlier's claim, or the earlier had already
// committed its bytes (it drops a claim only after that) and the later's
// probe sees them. Without claims two concurrent batches could both probe,
// find nothing, and both write.
//
// Apply writes many nodes, and probing them one by one, each with a new
// iterator and in random order, cost more than building them. So the
// nodes (and value blobs) Apply writes are probed together, sorted, with
// one iterator, once Apply has built them: at the end of Apply, and before
// anything the batch holds is committed to Pebble (a spill, the commit);
// a parallel Apply worker probes its own before it writes them. Until then
// they sit uncommitted in a Pebble batch. A conflict found then poisons the
// batch (Commit fails with it too), since its Pebble batch holds the
// conflicting bytes. PutBlob, PutNode, PutDecoded and StoreValue probe at
// once. Equal bytes found by a deferred probe have been written again,
// unchanged; equal bytes found at once are not written.
//
// A batch joining another batch's claim with equal bytes writes them too:
// the other batch may yet be discarded.
//
// Bulk loads (Batch.BulkLoad, a Builder's batch) are not checked: they fill
// a replica's store from a server it trusts.

// Address kinds in a claimKey.
const (
	kindNode = prefixNode // either stored form, whole or delta
	kindBlob = prefixBlob
)

// claimKey is an address being written: its kind and hash.
// kind is the key prefix of its address (prefixNode or prefixBlob).
type claimKey struct {
	kind byte
	h    node.Hash
}

func makeClaimKey(kind byte, h node.Hash) claimKey { return claimKey{kind, h} }

// appendKey appends k's Pebble key: its kind, then its hash.
func (k claimKey) appendKey(dst []byte) []byte {
	return k.h.Alg().Append(append(dst, k.kind), k.h)
}

func (k claimKey) compare(o claimKey) int {
	if k.kind != o.kind {
		return int(k.kind) - int(o.kind)
	}
	return k.h.Compare(o.h)
}

func (k claimKey) kindName() string {
	if k.kind == kindBlob {
		return "blob"
	}
	return "node"
}

func (k claimKey) hash() node.Hash { return k.h }

// claim is an address some batches are writing: the bytes, and how many
// claims on it batches hold.
type claim struct {
	raw  []byte
	refs int
}

// claimSet counts the claims one batch (or one parallel Apply worker)
// holds, by address.
type claimSet map[claimKey]int

func (s *Store) addressConflict(k claimKey, why string) error {
	return fmt.Errorf("store %s: %s %s: %w (%s)", s.dir, k.kindName(), k.hash(), ErrAddressConflict, why)
}

// claim claims address k, to write raw there, in mine (the claims of
// a batch, or of a parallel worker of it, whose batch holds own; own is
// only read). It fails with ErrAddressConflict if k is claimed with other
// bytes, and returns false (write nothing) if this batch claimed it
// already. raw must not change while claimed (callers copy a blob's).
func (s *Store) claim(k claimKey, raw []byte, own, mine claimSet) (bool, error) {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	if c := s.claims[k]; c != nil {
		if !bytes.Equal(c.raw, raw) {
			return false, s.addressConflict(k, "being written with different bytes")
		}
		if own[k] > 0 || mine[k] > 0 {
			return false, nil // written by this batch already
		}
		c.refs++ // another batch writes the same bytes
	} else {
		if s.claims == nil {
			s.claims = map[claimKey]*claim{}
		}
		s.claims[k] = &claim{raw: raw, refs: 1}
	}
	mine[k]++
	return true, nil
}

// checkWrite decides at once whether a write of raw at address (kind, h)
// goes ahead: it claims the address in mine and probes the store. It
// fails with ErrAddressConflict if the address is stored or claimed with
// different bytes, and returns false (write nothing) if it is stored with
// these bytes or this batch claimed it already.
func (s *Store) checkWrite(ctx context.Context, kind byte, h node.Hash, raw []byte, own, mine claimSet) (bool, error) {
	k := makeClaimKey(kind, h)
	if kind == kindBlob {
		raw = bytes.Clone(raw) // the caller's
	}
	if ok, err := s.claim(k, raw, own, mine); !ok || err != nil {
		return false, err
	}
	stored, ok, err := s.storedAt(ctx, kind, h)
	switch {
	case err != nil:
		s.releaseClaim(k, mine)
		return false, err
	case !ok:
		return true, nil
	}
	s.releaseClaim(k, mine) // not writing after all
	if !bytes.Equal(stored, raw) {
		return false, s.addressConflict(k, "address already stored with different bytes")
	}
	return false, nil
}

// written is a claimed write not yet probed for (see verifyWrites).
type written struct {
	k   claimKey
	raw []byte
}

// verifyWrites probes the store for the addresses of ws, claimed in mine
// and written to a Pebble batch not yet committed, with one iterator and
// in key order. It fails with ErrAddressConflict if one holds other
// bytes (and drops that claim). It sorts ws.
func (s *Store) verifyWrites(ctx context.Context, ws []written, mine claimSet) error {
	if len(ws) == 0 {
		return nil
	}
	slices.SortFunc(ws, func(a, b written) int { return a.k.compare(b.k) })
	done, err := s.use()
	if err != nil {
		return err
	}
	defer done()
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return dbErr(err)
	}
	var (
		key    = make([]byte, 0, 1+node.MaxHashSize)
		deltas []int // nodes not stored whole
		found  []int // ... but stored as deltas
		stored [][]byte
		absent []int // not stored here at all
	)
	seek := func(i int) ([]byte, bool, error) {
		if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
			return nil, false, nil
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, fmt.Errorf("store %s: read %s %s: %w", s.dir, ws[i].k.kindName(), ws[i].k.hash(), dbErr(err))
		}
		return v, true, nil
	}
	conflict := func(i int) error {
		s.releaseClaim(ws[i].k, mine)
		return s.addressConflict(ws[i].k, "address already stored with different bytes")
	}
	for i := range ws {
		key = ws[i].k.appendKey(key[:0]) // 'n'+hash for a node, 'b'+hash for a blob
		v, ok, err := seek(i)
		if err != nil {
			it.Close()
			return err
		}
		switch {
		case ok && !bytes.Equal(v, ws[i].raw):
			it.Close()
			return conflict(i)
		case !ok && ws[i].k.kind == kindNode:
			deltas = append(deltas, i)
		case !ok:
			absent = append(absent, i)
		}
	}
	for _, i := range deltas {
		key = ws[i].k.appendKey(key[:0])
		key[0] = prefixDelta
		v, ok, err := seek(i)
		if err != nil {
			it.Close()
			return err
		}
		if ok {
			found, stored = append(found, i), append(stored, bytes.Clone(v))
		} else {
			absent = append(absent, i)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store %s: probe: %w", s.dir, dbErr(err))
	}
	for j, i := range found {
		raw, err := s.undelta(ctx, ws[i].k.hash(), stored[j])
		if err != nil {
			return err
		}
		if !bytes.Equal(raw, ws[i].raw) {
			return conflict(i)
		}
	}
	return s.verifyWritesRemote(ctx, ws, absent, conflict)
}

// verifyWritesRemote checks the writes ws[absent], which this store does
// not hold, against its remote (a cluster's packs): an address the remote
// holds must hold the same bytes there. Without it a cluster server would
// check a crafted node only against what its cache happens to hold.
func (s *Store) verifyWritesRemote(ctx context.Context, ws []written, absent []int, conflict func(int) error) error {
	if s.remote == nil || len(absent) == 0 {
		return nil
	}
	for _, blobs := range []bool{false, true} {
		var hs []node.Hash
		var at []int
		for _, i := range absent {
			if (ws[i].k.kind == kindBlob) == blobs {
				hs, at = append(hs, ws[i].k.hash()), append(at, i)
			}
		}
		if len(hs) == 0 {
			continue
		}
		held, err := s.remote.Has(ctx, blobs, hs)
		if err != nil {
			return fmt.Errorf("store %s: ask remote: %w", s.dir, err)
		}
		if len(held) != len(hs) {
			return fmt.Errorf("store %s: remote answered %d of %d hashes", s.dir, len(held), len(hs))
		}
		var there []node.Hash
		var thereAt []int
		for j, ok := range held {
			if ok {
				there, thereAt = append(there, hs[j]), append(thereAt, at[j])
			}
		}
		if len(there) == 0 {
			continue
		}
		raws, err := s.fetchRemote(ctx, blobs, there)
		if err != nil {
			return err
		}
		for j, raw := range raws {
			if raw != nil && !bytes.Equal(raw, ws[thereAt[j]].raw) {
				return conflict(thereAt[j])
			}
		}
	}
	return nil
}

// releaseClaim drops one claim on k held in set.
func (s *Store) releaseClaim(k claimKey, set claimSet) {
	s.claimsMu.Lock()
	s.dropClaimLocked(k, 1)
	s.claimsMu.Unlock()
	if set[k]--; set[k] <= 0 {
		delete(set, k)
	}
}

// releaseClaims drops every claim in set, once the claimed bytes are
// committed to Pebble or will never be.
func (s *Store) releaseClaims(set claimSet) {
	if len(set) == 0 {
		return
	}
	s.claimsMu.Lock()
	for k, n := range set {
		s.dropClaimLocked(k, n)
	}
	s.claimsMu.Unlock()
	clear(set)
}

func (s *Store) dropClaimLocked(k claimKey, n int) {
	if c := s.claims[k]; c != nil {
		if c.refs -= n; c.refs <= 0 {
			delete(s.claims, k)
		}
	}
}

// storedAt returns what address (kind, h) holds: a blob's bytes, or a
// node's canonical encoding (rebuilt and hash-checked if it is stored as a
// delta); ok is false if nothing is stored there. It probes with an iterator's
// SeekPrefixGE, which consults bloom filters, and reads a value only when
// the key is present.
func (s *Store) storedAt(ctx context.Context, kind byte, h node.Hash) (stored []byte, ok bool, err error) {
	done, err := s.use()
	if err != nil {
		return nil, false, err
	}
	defer done()
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return nil, false, dbErr(err)
	}
	key := h.Alg().Append([]byte{0}, h)
	prefixes := []byte{prefixBlob}
	if kind == kindNode {
		prefixes = []byte{prefixNode, prefixDelta}
	}
	delta := false
	for _, p := range prefixes {
		key[0] = p
		if it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key) {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return nil, false, fmt.Errorf("store %s: read %s %s: %w", s.dir, makeClaimKey(kind, h).kindName(), h, dbErr(err))
			}
			stored, ok, delta = bytes.Clone(v), true, p == prefixDelta
			break
		}
	}
	if err := it.Close(); err != nil {
		return nil, false, fmt.Errorf("store %s: probe %s: %w", s.dir, h, dbErr(err))
	}
	if delta {
		stored, err = s.undelta(ctx, h, stored)
		if err != nil {
			return nil, false, err
		}
	}
	if !ok && s.remote != nil {
		// The cluster holds what this cache lacks: an address taken there
		// is taken here.
		raws, err := s.fetchRemote(ctx, kind != kindNode, []node.Hash{h})
		if err != nil {
			return nil, false, err
		}
		stored, ok = raws[0], raws[0] != nil
	}
	return stored, ok, nil
}

// checked reports whether the batch's writes are address-checked.
func (b *Batch) checked() bool { return (b.s.checkAddrs || b.checkAll) && !b.ingest }

// CheckAddresses makes this batch's writes address-checked, as in a store
// opened with Options.CheckAddresses: a server turns it on for every batch
// that stores what a client sent, whatever its store's options. Call it
// before the first write.
func (b *Batch) CheckAddresses() { b.checkAll = true }

// CheckNodeAddresses is CheckAddresses for nodes only: for a caller that
// has checked every blob address it will write itself, against the store
// and under a lock that keeps other writers out (the server's push, which
// checks all of them before it writes anything).
func (b *Batch) CheckNodeAddresses() { b.checkAll, b.blobsChecked = true, true }

// claimNode claims the address of node h (encoded as raw), which is not
// pending in the batch, in mine (the batch's own claims, or a parallel
// worker's) and reports whether to write it; the caller then records it
// for verifyWrites. A node in the node cache is stored, so it is compared
// with the cached node's bytes and not written.
func (b *Batch) claimNode(h node.Hash, raw []byte, mine claimSet) (bool, error) {
	if n := b.s.cache.get(h); n != nil {
		if !bytes.Equal(n.Raw(), raw) {
			return false, b.s.addressConflict(makeClaimKey(kindNode, h), "address already stored with different bytes")
		}
		return false, nil
	}
	return b.s.claim(makeClaimKey(kindNode, h), raw, b.claims, mine)
}

// verify probes for the batch's claimed writes not yet probed for
// (verifyWrites). A failure poisons the batch: its Pebble batch may hold
// conflicting bytes, so it must never be committed.
func (b *Batch) verify(ctx context.Context) error {
	if b.failed != nil || len(b.unverified) == 0 {
		return b.failed
	}
	err := b.s.verifyWrites(ctx, b.unverified, b.claims)
	clear(b.unverified)
	b.unverified = b.unverified[:0]
	if err != nil {
		b.failed = err
	}
	return err
}

// pendingConflict is the error for node h, pending in the batch as other
// bytes than raw (nil if they are the same).
func (b *Batch) pendingConflict(h node.Hash, pending, raw []byte) error {
	if bytes.Equal(pending, raw) {
		return nil
	}
	return b.s.addressConflict(makeClaimKey(kindNode, h), "written by this batch with different bytes")
}

// ownClaims returns the batch's claim set, creating it.
func (b *Batch) ownClaims() claimSet {
	if b.claims == nil {
		b.claims = claimSet{}
	}
	return b.claims
}

// takeClaims adds a parallel worker's claims to the batch's.
func (b *Batch) takeClaims(set claimSet) {
	if len(set) == 0 {
		return
	}
	own := b.ownClaims()
	for k, n := range set {
		own[k] += n
	}
}
