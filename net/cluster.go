package net

import (
	"context"
	"fmt"
	"time"

	"github.com/arbor-sync/arbor/node"
)

// Cluster is the shared state behind the servers of a cluster, as a server
// needs it (package cluster implements it over etcd and S3).
type Cluster interface {
	// Commit makes new the cluster's head if old still is, once every
	// node of new's tree that old's lacks is durably stored; new's nodes
	// are in the server's store. If another server committed first,
	// moved is true, nothing is committed and head is the cluster's
	// current head, already readable through the server's store.
	Commit(ctx context.Context, old, new node.Hash) (head node.Hash, moved bool, err error)
	// Current returns once this server has adopted (AdoptHead) the head
	// the cluster holds now, or fails if the cluster cannot say.
	Current(ctx context.Context) error
}

// clusterCurrentTimeout bounds how long a handshake waits to confirm the
// cluster's head before serving the last one this server knows.
const clusterCurrentTimeout = 2 * time.Second

// AdoptHead makes head this server's head and retained the roots it
// serves retained-base syncs from, as its cluster reports them. Watchers
// hear of the move as they do of a push. Only for a server with
// ServerOptions.Cluster.
func (s *Server) AdoptHead(ctx context.Context, head node.Hash, retained []node.Hash) error {
	if s.opts.Cluster == nil {
		return fmt.Errorf("arbor server: AdoptHead on a server outside a cluster")
	}
	s.adoptMu.Lock()
	defer s.adoptMu.Unlock()
	b, err := s.store.NewBatch()
	if err != nil {
		return err
	}
	b.SetRef(HeadRef, head)
	apply := s.retain.replace(b, retained)
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("arbor server: adopt cluster head %s: %w", head.Short(), err)
	}
	apply()
	return nil
}
