package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/arbor-sync/arbor/node"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status describes a cluster as etcd records it.
type Status struct {
	Name      string         `json:"name"`
	Hash      string         `json:"hash"`
	Head      node.Hash      `json:"head"`
	Records   uint64         `json:"records"`
	Retained  int            `json:"retained"`
	Packs     int            `json:"packs"`
	PackBytes int64          `json:"pack_bytes"`
	Condemned int            `json:"condemned"`
	Servers   []ServerRecord `json:"servers"`
	Revision  int64          `json:"revision"`
}

// ServerRecord is a live server of the cluster, as it registered itself.
type ServerRecord struct {
	ID      string    `json:"id"`
	Addr    string    `json:"addr"`
	Started time.Time `json:"started"`
}

// Status reads the cluster's state from etcd.
func (c *Cluster) Status(ctx context.Context) (*Status, error) {
	resp, err := c.etcd.Get(ctx, c.pfx, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster %s: status: %w", c.opts.Name, err)
	}
	st := &Status{Name: c.opts.Name, Hash: c.alg.String(), Head: node.EmptyRoot(c.alg), Revision: resp.Header.Revision}
	w := c.alg.Size()
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), c.pfx)
		switch {
		case strings.HasPrefix(k, "packs/"):
			var m packMeta
			if json.Unmarshal(kv.Value, &m) == nil {
				st.Packs++
				st.PackBytes += int64(m.Size)
			}
		case strings.HasPrefix(k, "condemned/"):
			st.Condemned++
		case strings.HasPrefix(k, "servers/"):
			var r ServerRecord
			if json.Unmarshal(kv.Value, &r) == nil {
				st.Servers = append(st.Servers, r)
			}
		case k == "head":
			if h, ok := c.alg.HashOf(kv.Value); ok && !h.IsZero() {
				st.Head = h
			}
		case k == "retained":
			st.Retained = len(kv.Value) / w
		}
	}
	if n, err := c.store.Count(ctx, st.Head); err == nil {
		st.Records = n
	}
	return st, nil
}

// Register records this server (its client address) in etcd for as long
// as the process lives: under a lease that expires ttl after it stops
// renewing it. The record goes when ctx ends.
func (c *Cluster) Register(ctx context.Context, id, addr string, ttl time.Duration) error {
	lease, err := c.etcd.Grant(ctx, int64(max(ttl/time.Second, 2)))
	if err != nil {
		return fmt.Errorf("cluster %s: register server: %w", c.opts.Name, err)
	}
	b, _ := json.Marshal(ServerRecord{ID: id, Addr: addr, Started: time.Now().UTC()})
	if _, err := c.etcd.Put(ctx, c.key("servers", id), string(b), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("cluster %s: register server: %w", c.opts.Name, err)
	}
	ka, err := c.etcd.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("cluster %s: register server: %w", c.opts.Name, err)
	}
	go func() {
		for range ka {
		}
	}()
	return nil
}

// SharedFile returns the cluster-wide file name from etcd, storing the
// bytes create returns there first if no server has (the servers of a
// cluster share one TLS certificate this way).
func (c *Cluster) SharedFile(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	k := c.key("files", name)
	g, err := c.etcd.Get(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read %s: %w", c.opts.Name, name, err)
	}
	if len(g.Kvs) == 1 {
		return g.Kvs[0].Value, nil
	}
	b, err := create()
	if err != nil {
		return nil, err
	}
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(b))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster %s: store %s: %w", c.opts.Name, name, err)
	}
	if resp.Succeeded {
		return b, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].Value, nil
}
