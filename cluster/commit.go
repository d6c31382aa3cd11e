package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTxnPacks is how many pack records one etcd transaction carries (etcd
// allows 128 operations per transaction by default).
const maxTxnPacks = 100

// writtenPack is a pack uploaded for a commit, not yet recorded in etcd.
type writtenPack struct {
	id      uint64
	meta    packMeta
	entries []packEntry
}

// Commit makes new the cluster's head if old still is, after writing to
// the bucket every node and blob of new's tree that old's tree lacks (read
// from this server's store, where the caller built new). It returns the
// state after the attempt: when another server committed first it fails
// with ErrHeadMoved, writes nothing to etcd, and the state is the new head
// (already indexed here), against which the caller merges again.
//
// A commit is acknowledged only once its packs are in the bucket and its
// transaction succeeded.
func (c *Cluster) Commit(ctx context.Context, old, new node.Hash) (State, error) {
	return c.commitFrom(ctx, c.store, old, new)
}

// Import makes root, a tree held in src (a single-node store, say), the
// cluster's head if old still is, writing its nodes to the bucket.
func (c *Cluster) Import(ctx context.Context, src *tree.Store, old, root node.Hash) (State, error) {
	if src.Hash() != c.alg {
		return State{}, fmt.Errorf("cluster: import: %w: the store hashes with %s, the cluster with %s", tree.ErrConfigMismatch, src.Hash(), c.alg)
	}
	if src.Config() != c.store.Config() {
		return State{}, fmt.Errorf("cluster: import: %w: the store's node sizes %+v differ from the cluster's %+v (the root would differ)", tree.ErrConfigMismatch, src.Config(), c.store.Config())
	}
	return c.commitFrom(ctx, src, old, root)
}

func (c *Cluster) commitFrom(ctx context.Context, src *tree.Store, old, new node.Hash) (State, error) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.mu.Lock()
	st, headRev := c.copyState(), c.headRev
	c.mu.Unlock()
	if st.Head != old {
		return st, fmt.Errorf("cluster %s: commit on %s: %w to %s", c.opts.Name, old.Short(), ErrHeadMoved, st.Head.Short())
	}
	if new == old {
		return st, nil
	}
	packs, err := c.writePacks(ctx, src, old, new)
	if err != nil {
		return st, err
	}
	retained := make([]node.Hash, 0, len(st.Retained)+1)
	for _, r := range st.Retained {
		if r != new {
			retained = append(retained, r)
		}
	}
	retained = append(retained, new)
	if n := len(retained) - c.opts.Retain; n > 0 {
		retained = retained[n:]
	}
	var rl []byte
	for _, r := range retained {
		rl = c.alg.Append(rl, r)
	}
	headKey := c.key("head")
	// Packs beyond one transaction's worth are recorded first; until the
	// head names them they are garbage to GC, which spares packs younger
	// than its grace period.
	for len(packs) > maxTxnPacks {
		ops := packOps(c, packs[:maxTxnPacks])
		if _, err := c.etcd.Txn(ctx).Then(ops...).Commit(); err != nil {
			c.forget(packs)
			return st, fmt.Errorf("cluster %s: record packs: %w", c.opts.Name, err)
		}
		c.count(func(s *Stats) { s.Txns++ })
		c.indexOwn(packs[:maxTxnPacks])
		packs = packs[maxTxnPacks:]
	}
	ops := append(packOps(c, packs), clientv3.OpPut(headKey, string(new.Bytes())), clientv3.OpPut(c.key("retained"), string(rl)))
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(headKey), "=", headRev)).Then(ops...).Commit()
	c.count(func(s *Stats) { s.Txns++ })
	if err != nil {
		// The transaction may or may not have committed: the follower
		// tells. Packs are left to GC either way.
		return c.State(), fmt.Errorf("cluster %s: commit: %w", c.opts.Name, err)
	}
	if !resp.Succeeded {
		c.count(func(s *Stats) { s.Conflicts++ })
		c.forget(packs)
		if err := c.waitRev(ctx, resp.Header.Revision); err != nil {
			return c.State(), err
		}
		cur := c.State()
		return cur, fmt.Errorf("cluster %s: commit on %s: %w to %s", c.opts.Name, old.Short(), ErrHeadMoved, cur.Head.Short())
	}
	c.count(func(s *Stats) { s.Commits++ })
	c.indexOwn(packs)
	if err := c.setHead(resp.Header.Revision, new.Bytes(), rl, 0); err != nil {
		return c.State(), err
	}
	return c.State(), nil
}

func packOps(c *Cluster, packs []writtenPack) []clientv3.Op {
	ops := make([]clientv3.Op, 0, len(packs)+2)
	for _, p := range packs {
		m, _ := json.Marshal(p.meta)
		ops = append(ops, clientv3.OpPut(c.key(fmt.Sprintf("packs/%016x", p.id)), string(m)))
	}
	return ops
}

// indexOwn indexes packs this server wrote, from the entries it has.
func (c *Cluster) indexOwn(packs []writtenPack) {
	for _, p := range packs {
		if err := c.idx.add(p.id, p.entries); err != nil {
			c.log.Warn("arbor cluster: index own pack", "pack", fmt.Sprintf("%016x", p.id), "err", err)
		}
	}
}

// forget deletes packs a failed commit wrote (best effort: GC deletes
// objects no record names once they are older than its grace period).
func (c *Cluster) forget(packs []writtenPack) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range packs {
		if err := c.obj.remove(ctx, packName(p.id)); err != nil {
			c.log.Debug("arbor cluster: remove unused pack", "err", err)
		}
	}
}

// writePacks uploads the nodes and blobs of new's tree that old's tree
// lacks, in packs of at most PackBytes.
func (c *Cluster) writePacks(ctx context.Context, src *tree.Store, old, new node.Hash) ([]writtenPack, error) {
	var packs []writtenPack
	w := newPackWriter(c.alg)
	flush := func() error {
		if len(w.entries) == 0 {
			return nil
		}
		b, off, n := w.finish()
		id := newPackID()
		if err := c.obj.put(ctx, packName(id), b); err != nil {
			return fmt.Errorf("cluster %s: write pack: %w", c.opts.Name, err)
		}
		c.count(func(s *Stats) { s.Puts++; s.PutBytes += int64(len(b)) })
		packs = append(packs, writtenPack{id: id, meta: packMeta{Size: uint64(len(b)), IndexOff: off, IndexLen: n, Entries: len(w.entries)}, entries: w.entries})
		w = newPackWriter(c.alg)
		return nil
	}
	ot, err := c.oldTree(ctx, old)
	if err != nil {
		return nil, err
	}
	add := func(blob bool, h node.Hash, raw []byte) error {
		w.add(blob, h, raw)
		if w.size() >= c.opts.PackBytes {
			return flush()
		}
		return nil
	}
	if err := c.collect(ctx, src, ot, new, add); err != nil {
		c.forget(packs)
		return nil, err
	}
	if err := flush(); err != nil {
		c.forget(packs)
		return nil, err
	}
	return packs, nil
}

// oldTree answers "is this node in old's tree", by position: in a prolly
// tree a node of level L holding key k can only be the level-L node of
// the path to k.
type oldTree struct {
	s    *tree.Store
	root *node.Node // nil: the empty tree
	hash node.Hash
}

func (c *Cluster) oldTree(ctx context.Context, old node.Hash) (*oldTree, error) {
	ot := &oldTree{s: c.store, hash: old}
	if old == node.EmptyRoot(c.alg) {
		return ot, nil
	}
	n, err := c.store.Node(ctx, old)
	if err != nil {
		return nil, fmt.Errorf("cluster: read head %s: %w", old.Short(), err)
	}
	ot.root = n
	return ot, nil
}

func (o *oldTree) has(ctx context.Context, n *node.Node) (bool, error) {
	if o.root == nil || n.Len() == 0 {
		return false, nil
	}
	key := n.Key(n.Len() - 1)
	cur := o.root
	for cur.Level() > n.Level() {
		i := min(cur.Search(key), cur.Len()-1)
		h, _ := cur.Child(i)
		var err error
		if cur, err = o.s.Node(ctx, h); err != nil {
			return false, err
		}
	}
	return cur.Level() == n.Level() && cur.Hash() == n.Hash(), nil
}

// value returns the stored form of key's value in old (ok false if absent).
func (o *oldTree) value(ctx context.Context, key []byte) (node.Value, bool, error) {
	if o.root == nil {
		return node.Value{}, false, nil
	}
	v, err := o.s.GetValue(ctx, o.hash, key)
	if errors.Is(err, tree.ErrNotFound) {
		return node.Value{}, false, nil
	}
	return v, err == nil, err
}

// collect passes to add every node of root's tree (read from src) that old
// lacks, and the blobs of every out-of-line value old does not hold under
// the same key.
func (c *Cluster) collect(ctx context.Context, src *tree.Store, old *oldTree, root node.Hash, add func(blob bool, h node.Hash, raw []byte) error) error {
	if root == node.EmptyRoot(c.alg) {
		return nil
	}
	n, err := src.Node(ctx, root)
	if err != nil {
		return fmt.Errorf("cluster: read new root %s: %w", root.Short(), err)
	}
	return c.collectNode(ctx, src, old, n, add)
}

func (c *Cluster) collectNode(ctx context.Context, src *tree.Store, old *oldTree, n *node.Node, add func(blob bool, h node.Hash, raw []byte) error) error {
	if in, err := old.has(ctx, n); err != nil || in {
		return err
	}
	if err := add(false, n.Hash(), n.Raw()); err != nil {
		return err
	}
	if n.IsLeaf() {
		if n.Refs() == 0 {
			return nil
		}
		for i := range n.Len() {
			v := n.Value(i)
			if !v.IsRef {
				continue
			}
			if ov, ok, err := old.value(ctx, n.Key(i)); err != nil {
				return err
			} else if ok && ov.IsRef && ov.Ref == v.Ref {
				continue
			}
			idx, err := src.Blob(ctx, v.Ref)
			if err != nil {
				return fmt.Errorf("cluster: value of key %q: %w", n.Key(i), err)
			}
			if err := add(true, v.Ref, idx); err != nil {
				return err
			}
			chunks, _, err := node.DecodeValueIndex(c.alg, idx)
			if err != nil {
				return fmt.Errorf("cluster: value of key %q: %w", n.Key(i), err)
			}
			for _, ch := range chunks {
				b, err := src.Blob(ctx, ch.Hash)
				if err != nil {
					return fmt.Errorf("cluster: value of key %q: %w", n.Key(i), err)
				}
				if err := add(true, ch.Hash, b); err != nil {
					return err
				}
			}
		}
		return nil
	}
	hs := make([]node.Hash, n.Len())
	for i := range hs {
		hs[i], _ = n.Child(i)
	}
	for len(hs) > 0 {
		part := hs[:min(len(hs), 256)]
		hs = hs[len(part):]
		kids, err := src.Nodes(ctx, part)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := c.collectNode(ctx, src, old, k, add); err != nil {
				return err
			}
		}
	}
	return nil
}
