package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/arbor-sync/arbor/internal/fsutil"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
)

// NewServer returns a sync server for the cluster, serving from this
// server's cache: pushes commit through the cluster and the server follows
// the cluster's head. Its certificate is the cluster's, kept in etcd, so
// one fingerprint pins every server: the first server to start stores the
// one in opts.CertDir (created there if missing); later servers write it
// into their CertDir. A CertDir that holds another certificate than the
// cluster's is an error, never overwritten. opts.CertDir defaults to
// Dir/cert.
func (c *Cluster) NewServer(ctx context.Context, opts arbornet.ServerOptions) (*arbornet.Server, error) {
	if opts.CertDir == "" {
		opts.CertDir = filepath.Join(c.opts.Dir, "cert")
	}
	if err := c.shareCert(ctx, opts.CertDir); err != nil {
		return nil, err
	}
	opts.Cluster = commitAdapter{c}
	opts.Retain = c.opts.Retain
	s, err := arbornet.NewServer(c.store, opts)
	if err != nil {
		return nil, err
	}
	c.Subscribe(func(st State) {
		if err := s.AdoptHead(context.Background(), st.Head, st.Retained); err != nil {
			c.log.Error("arbor cluster: adopt head", "head", st.Head.Short(), "err", err)
		}
	})
	return s, nil
}

type certFiles struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

func readCert(dir string) (f certFiles, err error) {
	if f.Cert, err = os.ReadFile(filepath.Join(dir, arbornet.CertFile)); err != nil {
		return f, err
	}
	f.Key, err = os.ReadFile(filepath.Join(dir, arbornet.KeyFile))
	return f, err
}

func (c *Cluster) shareCert(ctx context.Context, dir string) error {
	local, lerr := readCert(dir)
	b, err := c.SharedFile(ctx, "tls", func() ([]byte, error) {
		if lerr == nil {
			return json.Marshal(local)
		}
		// Made aside, not in dir: if another server's certificate wins the
		// race into etcd, this one was never this server's.
		tmp, err := os.MkdirTemp("", "arbor-cluster-cert")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if err := arbornet.CreateCert(tmp); err != nil {
			return nil, err
		}
		f, err := readCert(tmp)
		if err != nil {
			return nil, err
		}
		return json.Marshal(f)
	})
	if err != nil {
		return fmt.Errorf("cluster %s: certificate: %w", c.opts.Name, err)
	}
	var f certFiles
	if err := json.Unmarshal(b, &f); err != nil || len(f.Cert) == 0 || len(f.Key) == 0 {
		return fmt.Errorf("cluster %s: certificate in etcd is unreadable", c.opts.Name)
	}
	if lerr == nil {
		if !bytes.Equal(local.Cert, f.Cert) || !bytes.Equal(local.Key, f.Key) {
			return fmt.Errorf("cluster %s: %s holds another certificate than the cluster's: every server of a cluster presents one (remove it, or point --cert-dir at an empty directory, to use the cluster's)", c.opts.Name, dir)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, arbornet.KeyFile), f.Key, 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, arbornet.CertFile), f.Cert, 0o644)
}

type commitAdapter struct{ c *Cluster }

func (a commitAdapter) Commit(ctx context.Context, old, new node.Hash) (node.Hash, bool, error) {
	st, err := a.c.Commit(ctx, old, new)
	if errors.Is(err, ErrHeadMoved) {
		return st.Head, true, nil
	}
	return st.Head, false, err
}

func (a commitAdapter) Current(ctx context.Context) error { return a.c.Current(ctx) }
