package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/cluster"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// clusterFlags name a cluster: its etcd, its bucket and its name. S3
// credentials and region come from the standard AWS environment variables.
type clusterFlags struct {
	Etcd        string `placeholder:"URLS" help:"Cluster mode: etcd client URLs, comma-separated (the cluster's head lives there)."`
	S3          string `name:"s3" placeholder:"URL" help:"Cluster mode: S3 endpoint (http://host:port or https://…); credentials and region from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION."`
	Bucket      string `placeholder:"NAME" help:"Cluster mode: an existing bucket; the cluster's packs go under packs/ in it."`
	ClusterName string `name:"cluster" default:"default" placeholder:"NAME" help:"Cluster mode: the cluster's name, telling clusters that share one etcd apart."`
}

func (f clusterFlags) enabled() bool { return f.Etcd != "" || f.S3 != "" || f.Bucket != "" }

// options checks the flags and returns the cluster's options with dir as
// this process's local cache.
func (f clusterFlags) options(dir string, log *slog.Logger) (cluster.Options, error) {
	var missing []string
	for _, m := range []struct{ name, v string }{{"--etcd", f.Etcd}, {"--s3", f.S3}, {"--bucket", f.Bucket}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return cluster.Options{}, fmt.Errorf("cluster mode needs --etcd, --s3 and --bucket: %s missing", strings.Join(missing, ", "))
	}
	var eps []string
	for _, u := range strings.Split(f.Etcd, ",") {
		if u = strings.TrimSpace(u); u != "" {
			eps = append(eps, u)
		}
	}
	return cluster.Options{Etcd: eps, S3: f.S3, Bucket: f.Bucket, Name: f.ClusterName, Dir: dir, Logger: log}, nil
}

// open joins the cluster with a throwaway local cache (for the commands
// that only read or administer it), removed by the returned close.
func (f clusterFlags) open(ctx context.Context, e *env) (*cluster.Cluster, func(), error) {
	dir, err := os.MkdirTemp("", "arbor-cluster-cache")
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(levelHandler{min: slog.LevelWarn, Handler: slog.NewTextHandler(e.stderr, nil)})
	o, err := f.options(dir, log)
	if err == nil {
		o.CacheSize = e.global.cacheBytes()
	}
	var c *cluster.Cluster
	if err == nil {
		c, err = cluster.Open(ctx, o)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return c, func() { c.Close(); os.RemoveAll(dir) }, nil
}

type clusterCmd struct {
	Status clusterStatusCmd `cmd:"" help:"Show a cluster's head, records, servers, packs and bytes."`
	Import clusterImportCmd `cmd:"" help:"Make a single-node store (--db) the head of an empty cluster; roots stay equal."`
	Export clusterExportCmd `cmd:"" help:"Write the cluster's head into a new single-node store (--db, a new or empty directory); roots stay equal."`
	GC     clusterGCCmd     `cmd:"" name:"gc" help:"Delete the packs no live root needs (two phases, a grace period apart)."`
}

func (clusterCmd) Help() string {
	return "A cluster is stateless 'arbor serve' processes over one S3 bucket (nodes, in packs) and etcd (the head).\n" +
		"Start servers with 'arbor --db CACHE_DIR serve --etcd URLS --s3 URL --bucket NAME --tokens FILE'; a\n" +
		"single-node dataset moves in with 'cluster import' and out with 'cluster export' (or a clone: 'arbor sync'\n" +
		"into an empty store through any server).\n\n" +
		"Example:\n  export AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…\n" +
		"  arbor cluster status --etcd http://127.0.0.1:2379 --s3 http://127.0.0.1:8333 --bucket arbor"
}

type clusterStatusCmd struct {
	clusterFlags
	JSON bool `name:"json" help:"Print the status as one JSON object."`
}

func (c clusterStatusCmd) Run(e *env) error {
	cl, closeFn, err := c.open(e.ctx, e)
	if err != nil {
		return err
	}
	defer closeFn()
	st, err := cl.Status(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, st)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "cluster\t%s\n", st.Name)
	fmt.Fprintf(tw, "head\t%s\n", st.Head)
	fmt.Fprintf(tw, "records\t%d\n", st.Records)
	fmt.Fprintf(tw, "hash\t%s\n", st.Hash)
	fmt.Fprintf(tw, "retained\t%d roots\n", st.Retained)
	fmt.Fprintf(tw, "packs\t%d (%s)\n", st.Packs, humanBytes(st.PackBytes))
	if st.Condemned > 0 {
		fmt.Fprintf(tw, "condemned\t%d packs (deleted by the next gc after the grace period)\n", st.Condemned)
	}
	fmt.Fprintf(tw, "servers\t%d\n", len(st.Servers))
	for _, s := range st.Servers {
		fmt.Fprintf(tw, "  %s\t%s (up since %s)\n", s.ID, s.Addr, s.Started.Format(time.RFC3339))
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type clusterImportCmd struct {
	clusterFlags
}

func (c clusterImportCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	root, err := db.Root(e.ctx)
	if err != nil {
		return err
	}
	cl, closeFn, err := c.open(e.ctx, e)
	if err != nil {
		return err
	}
	defer closeFn()
	cur := cl.State().Head
	if cur != node.EmptyRoot(cl.Hash()) {
		return fmt.Errorf("cluster import: cluster %s is not empty (head %s): import only starts a cluster; change a running one by syncing a replica", c.ClusterName, cur)
	}
	start := time.Now()
	before := cl.Stats()
	st, err := cl.Import(e.ctx, db.Store(), cur, root)
	if errors.Is(err, cluster.ErrHeadMoved) {
		return fmt.Errorf("cluster import: another server committed to cluster %s meanwhile (head %s): %w", c.ClusterName, st.Head, err)
	}
	if err != nil {
		return fmt.Errorf("cluster import from %s: %w", e.global.DB, err)
	}
	after := cl.Stats()
	fmt.Fprintf(e.stdout, "imported %s into cluster %s: head %s (%d packs, %s, %s)\n", e.global.DB, c.ClusterName, st.Head,
		after.Puts-before.Puts, humanBytes(after.PutBytes-before.PutBytes), time.Since(start).Round(time.Millisecond))
	return nil
}

type clusterGCCmd struct {
	clusterFlags
	Grace time.Duration `default:"10m" help:"A dead pack is deleted only by a gc at least this long after one that condemned it (syncs reading an older root finish meanwhile)."`
}

func (c clusterGCCmd) Run(e *env) error {
	dir, err := os.MkdirTemp("", "arbor-cluster-cache")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o, err := c.options(dir, slog.New(levelHandler{min: slog.LevelWarn, Handler: slog.NewTextHandler(e.stderr, nil)}))
	if err != nil {
		return err
	}
	o.GCGrace = c.Grace
	cl, err := cluster.Open(e.ctx, o)
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.GC(e.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "packs %d, live %d; condemned %d; deleted %d (%s); orphan objects deleted %d\n",
		st.Packs, st.LivePacks, st.Condemned, st.Deleted, humanBytes(st.DeletedBytes), st.Orphans)
	return nil
}

// serveCluster opens this server's membership of the cluster, with --db as
// its local cache, and returns the sync server for it.
func (c serveCmd) serveCluster(e *env, opts arbor.ServerOptions, log *slog.Logger) (*arbor.Server, *cluster.Cluster, error) {
	if e.global.DB == "" {
		return nil, nil, errors.New("serve --etcd: pass --db DIR for this server's local cache of the cluster (it may be empty; losing it loses nothing)")
	}
	o, err := c.options(e.global.DB, log)
	if err != nil {
		return nil, nil, err
	}
	o.CacheSize = e.global.cacheBytes()
	if e.global.Hash != "" {
		if o.Hash, err = arbor.ParseHashAlg(e.global.Hash); err != nil {
			return nil, nil, fmt.Errorf("--hash: %w", err)
		}
	}
	if c.Retain > 0 {
		o.Retain = c.Retain
	}
	cl, err := cluster.Open(e.ctx, o)
	if err != nil {
		return nil, nil, err
	}
	srv, err := cl.NewServer(e.ctx, opts)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return &arbor.Server{Server: srv}, cl, nil
}

type clusterExportCmd struct {
	clusterFlags
	JSON bool `name:"json" help:"Print the result as one JSON line."`
}

func (clusterExportCmd) Help() string {
	return "Reads the cluster's current head (a linearizable read in etcd) through a throwaway cache and builds\n" +
		"a new single-node store in --db with the cluster's hash and node sizes, then checks that the new\n" +
		"store's root equals the head. --db must not exist or be empty. The store can be served with\n" +
		"'arbor --db DIR serve' and imported into another cluster with 'cluster import'.\n\n" +
		"Example:\n  arbor --db backup cluster export --etcd http://127.0.0.1:2379 --s3 http://127.0.0.1:8333 --bucket arbor"
}

// exportJSON is 'cluster export --json'.
type exportJSON struct {
	Cluster string     `json:"cluster"`
	Head    arbor.Hash `json:"head"`
	Root    arbor.Hash `json:"root"`
	Records uint64     `json:"records"`
	DB      string     `json:"db"`
	Ms      float64    `json:"ms"`
}

func (c clusterExportCmd) Run(e *env) error {
	dir := e.global.DB
	if dir == "" {
		return errors.New("cluster export: pass --db DIR for the new store")
	}
	if err := newStoreDir(dir); err != nil {
		return fmt.Errorf("cluster export: %w", err)
	}
	cl, closeFn, err := c.open(e.ctx, e)
	if err != nil {
		return err
	}
	defer closeFn()
	if e.global.Hash != "" {
		alg, err := arbor.ParseHashAlg(e.global.Hash)
		if err != nil {
			return fmt.Errorf("--hash: %w", err)
		}
		if alg != cl.Hash() {
			return fmt.Errorf("cluster export: --hash %s: cluster %s uses %s (the export keeps the cluster's hash, so that the roots are equal)", e.global.Hash, c.ClusterName, cl.Hash())
		}
	}
	// The head etcd holds now, not the one this process loaded.
	if err := cl.Current(e.ctx); err != nil {
		return fmt.Errorf("cluster export: %w", err)
	}
	head := cl.State().Head
	start := time.Now()
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, os.ErrNotExist)
	db, err := arbor.Open(dir, &arbor.Options{Hash: cl.Hash(), Chunker: cl.Store().Config(), CacheSize: e.global.cacheBytes()})
	if err != nil {
		return fmt.Errorf("cluster export: create store %s: %w", dir, err)
	}
	// A failed export leaves no half-made store behind.
	discard := func() {
		db.Close()
		if created {
			os.RemoveAll(dir)
		} else {
			clearDir(dir)
		}
	}
	var root arbor.Hash
	var n uint64
	err = e.timed(fmt.Sprintf("exporting cluster %s head %s", c.ClusterName, head), func() (err error) {
		root, n, err = exportHead(e.ctx, cl.Store(), head, db)
		if err == nil {
			err = db.Settle(e.ctx)
		}
		return err
	})
	if err != nil {
		discard()
		return fmt.Errorf("cluster export of %s into %s: %w", c.ClusterName, dir, err)
	}
	if root != head {
		discard()
		return fmt.Errorf("cluster export: the new store's root %s differs from cluster %s's head %s (%d records); nothing was kept in %s", root, c.ClusterName, head, n, dir)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("cluster export: close %s: %w", dir, err)
	}
	el := time.Since(start)
	if c.JSON {
		return writeJSON(e.stdout, exportJSON{Cluster: c.ClusterName, Head: head, Root: root, Records: n, DB: dir, Ms: float64(el.Microseconds()) / 1000})
	}
	fmt.Fprintf(e.stdout, "exported cluster %s into %s: %d records in %s\nhead %s (cluster)\nroot %s (%s): equal\n",
		c.ClusterName, dir, n, el.Round(time.Millisecond), head, root, dir)
	return nil
}

// newStoreDir checks that dir can take a new store: it does not exist, or
// is an empty directory.
func newStoreDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory: the export writes a new store; name a new directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty: the export writes a new store and never overwrites one; name a new or empty directory", dir)
	}
	return nil
}

// clearDir removes what dir holds, keeping dir.
func clearDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, en := range ents {
		os.RemoveAll(filepath.Join(dir, en.Name()))
	}
}

// exportFetchBatch is how many nodes one prefetch asks the cluster for.
const exportFetchBatch = 4096

// exportHead builds the tree at head of src (a cluster's read-through
// store) in db, in one commit that sets db's head, and returns the new
// root and the number of records. The nodes are fetched level by level, a
// batch at a time (one ranged GET per run of neighbouring entries in a
// pack) before the records are read in key order; the same records with
// the same hash and chunker give the same root (history independence).
func exportHead(ctx context.Context, src *tree.Store, head arbor.Hash, db *arbor.DB) (arbor.Hash, uint64, error) {
	for level := []node.Hash{head}; len(level) > 0; {
		var next []node.Hash
		for i := 0; i < len(level); i += exportFetchBatch {
			ns, err := src.Nodes(ctx, level[i:min(i+exportFetchBatch, len(level))])
			if err != nil {
				return arbor.Hash{}, 0, err
			}
			for _, nd := range ns {
				if nd.IsLeaf() {
					continue
				}
				for j := range nd.Len() {
					h, _ := nd.Child(j)
					next = append(next, h)
				}
			}
		}
		level = next
	}
	b, err := db.Store().NewBatch()
	if err != nil {
		return arbor.Hash{}, 0, err
	}
	defer b.Discard()
	bl := b.NewBuilder(ctx)
	it := src.NewIterator(ctx, head, tree.Range{})
	for it.Next() {
		v := it.Value()
		if v.IsRef {
			raw, err := src.ReadValue(ctx, v)
			if err != nil {
				it.Close()
				return arbor.Hash{}, 0, fmt.Errorf("key %q: %w", it.Key(), err)
			}
			err = bl.Add(it.Key(), raw)
		} else {
			err = bl.AddValue(it.Key(), v)
		}
		if err != nil {
			it.Close()
			return arbor.Hash{}, 0, err
		}
	}
	if err := it.Close(); err != nil {
		return arbor.Hash{}, 0, err
	}
	n := bl.Count()
	root, err := bl.Finish()
	if err != nil {
		return arbor.Hash{}, 0, err
	}
	b.ExpectRef(arbor.HeadRef, arbor.Hash{}, false)
	b.SetRef(arbor.HeadRef, root)
	if err := b.Commit(ctx); err != nil {
		return arbor.Hash{}, 0, err
	}
	return root, n, nil
}
