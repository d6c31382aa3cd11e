package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/arbor-sync/arbor/node"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// GCStats reports one garbage collection of the cluster's packs.
type GCStats struct {
	Packs        int   // pack records in etcd when GC began
	LivePacks    int   // packs holding a node or blob a live root needs
	Condemned    int   // dead packs newly marked; deleted by a later GC after the grace period
	Deleted      int   // packs deleted (record and object)
	DeletedBytes int64 // their size
	Orphans      int   // objects no record names (a failed commit's), deleted
}

// GC deletes the packs no live root needs. Live roots are the head and the
// retained heads at one etcd revision (the snapshot); a pack is a
// candidate only if it was recorded at or before the snapshot and holds
// nothing reachable from them. Deletion is two-phase: a first GC marks a
// dead pack condemned (with the time), and a GC at least GCGrace later
// deletes it if it is still dead. The grace period, not a lease, protects
// readers: a sync reading an older root on any server, or a server whose
// index still names the pack, keeps reading it for that long. A commit in
// flight needs no protection: it writes every node its base lacks into its
// own packs, and its base is the head (live) or newer than the snapshot.
// Killed at any point, GC leaves either a record and its object, or an
// object no record names, which a later GC deletes as an orphan.
func (c *Cluster) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	resp, err := c.etcd.Get(ctx, c.pfx, clientv3.WithPrefix())
	if err != nil {
		return st, fmt.Errorf("cluster %s: gc: read etcd: %w", c.opts.Name, err)
	}
	snap := resp.Header.Revision
	type rec struct {
		rev  int64
		meta packMeta
	}
	packs := map[uint64]rec{}
	condemned := map[uint64]time.Time{}
	var roots []node.Hash
	w := c.alg.Size()
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), c.pfx)
		switch {
		case strings.HasPrefix(k, "packs/"):
			id, err := parsePackKey(k)
			if err != nil {
				return st, err
			}
			var m packMeta
			_ = json.Unmarshal(kv.Value, &m)
			packs[id] = rec{kv.CreateRevision, m}
		case strings.HasPrefix(k, "condemned/"):
			id, err := strconv.ParseUint(strings.TrimPrefix(k, "condemned/"), 16, 64)
			if err != nil {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, string(kv.Value))
			if err == nil {
				condemned[id] = t
			}
		case k == "head":
			if h, ok := c.alg.HashOf(kv.Value); ok && !h.IsZero() {
				roots = append(roots, h)
			}
		case k == "retained":
			for v := kv.Value; len(v) >= w; v = v[w:] {
				if h, ok := c.alg.HashOf(v[:w]); ok && !h.IsZero() {
					roots = append(roots, h)
				}
			}
		}
	}
	st.Packs = len(packs)
	// Every pack of the snapshot must be indexed here to be judged.
	for id, r := range packs {
		if ok, _ := c.idx.has(id); !ok {
			m, _ := json.Marshal(r.meta)
			if err := c.indexPack(ctx, id, m); err != nil {
				return st, fmt.Errorf("cluster %s: gc: %w", c.opts.Name, err)
			}
		}
	}
	liveNodes, liveBlobs := map[node.Hash]struct{}{}, map[node.Hash]struct{}{}
	for _, r := range roots {
		if err := c.mark(ctx, r, liveNodes, liveBlobs); err != nil {
			return st, fmt.Errorf("cluster %s: gc: mark %s: %w", c.opts.Name, r.Short(), err)
		}
	}
	now := time.Now()
	for id, r := range packs {
		es, err := c.idx.entries(id, c.alg)
		if err != nil {
			return st, err
		}
		live := false
		for _, e := range es {
			set := liveNodes
			if e.blob {
				set = liveBlobs
			}
			if _, ok := set[e.hash]; ok {
				live = true
				break
			}
		}
		ckey := c.key(fmt.Sprintf("condemned/%016x", id))
		if live || r.rev > snap {
			st.LivePacks++
			if _, ok := condemned[id]; ok {
				if _, err := c.etcd.Delete(ctx, ckey); err != nil {
					return st, err
				}
			}
			continue
		}
		t, ok := condemned[id]
		if !ok {
			if _, err := c.etcd.Put(ctx, ckey, now.UTC().Format(time.RFC3339Nano)); err != nil {
				return st, fmt.Errorf("cluster %s: gc: condemn pack: %w", c.opts.Name, err)
			}
			st.Condemned++
			continue
		}
		if now.Sub(t) < c.opts.GCGrace {
			continue
		}
		// The record goes first (no server indexes the pack again), then
		// the object; a kill in between leaves an orphan object.
		pkey := c.key(fmt.Sprintf("packs/%016x", id))
		if _, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(pkey), "=", r.rev)).Then(clientv3.OpDelete(pkey), clientv3.OpDelete(ckey)).Commit(); err != nil {
			return st, fmt.Errorf("cluster %s: gc: delete pack record: %w", c.opts.Name, err)
		}
		if err := c.obj.remove(ctx, packName(id)); err != nil {
			return st, fmt.Errorf("cluster %s: gc: %w", c.opts.Name, err)
		}
		_ = c.idx.drop(id, c.alg)
		st.Deleted++
		st.DeletedBytes += int64(r.meta.Size)
	}
	// Objects no record names, older than the grace period: packs of
	// commits that lost their race or died before their transaction.
	objs, err := c.obj.list(ctx, packPrefix)
	if err != nil {
		return st, err
	}
	for _, o := range objs {
		var id uint64
		if _, err := fmt.Sscanf(strings.TrimPrefix(o.name, packPrefix), "%016x.pack", &id); err != nil {
			continue
		}
		if _, ok := packs[id]; ok || now.Sub(o.modified) < c.opts.GCGrace {
			continue
		}
		// Recorded since the snapshot? Then it is a commit's, not an orphan.
		g, err := c.etcd.Get(ctx, c.key(fmt.Sprintf("packs/%016x", id)))
		if err != nil {
			return st, err
		}
		if len(g.Kvs) > 0 {
			continue
		}
		if err := c.obj.remove(ctx, o.name); err != nil {
			return st, err
		}
		st.Orphans++
	}
	return st, nil
}

// mark adds root's nodes and blobs to the live sets.
func (c *Cluster) mark(ctx context.Context, root node.Hash, liveNodes, liveBlobs map[node.Hash]struct{}) error {
	if root == node.EmptyRoot(c.alg) {
		return nil
	}
	if _, ok := liveNodes[root]; ok {
		return nil
	}
	n, err := c.store.Node(ctx, root)
	if err != nil {
		return err
	}
	liveNodes[root] = struct{}{}
	if n.IsLeaf() {
		for i := range n.Len() {
			v := n.Value(i)
			if !v.IsRef {
				continue
			}
			liveBlobs[v.Ref] = struct{}{}
			idx, err := c.store.Blob(ctx, v.Ref)
			if err != nil {
				return err
			}
			chunks, _, err := node.DecodeValueIndex(c.alg, idx)
			if err != nil {
				return err
			}
			for _, ch := range chunks {
				liveBlobs[ch.Hash] = struct{}{}
			}
		}
		return nil
	}
	for i := range n.Len() {
		h, _ := n.Child(i)
		if err := c.mark(ctx, h, liveNodes, liveBlobs); err != nil {
			return err
		}
	}
	return nil
}
