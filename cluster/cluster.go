package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrHeadMoved reports a commit whose base is no longer the cluster's head:
// another server committed first. Nothing of the losing commit is visible.
var ErrHeadMoved = errors.New("cluster head moved")

// Options configure a server's membership in a cluster.
type Options struct {
	// Etcd lists the etcd client URLs. Required.
	Etcd []string
	// S3 is the object store's endpoint, http://host:port or https://…
	// Required.
	S3 string
	// Bucket is an existing bucket; the cluster's packs live under
	// "packs/" in it. Required.
	Bucket string
	// AccessKey and SecretKey authenticate to S3. Empty: the standard AWS
	// environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
	AccessKey, SecretKey string
	// Region of the bucket. Empty: AWS_REGION, then us-east-1.
	Region string
	// Name tells clusters sharing one etcd apart: their keys live under
	// /arbor/<Name>/. Default "default".
	Name string
	// Dir holds this server's local cache: a store of the nodes it has
	// read (a tree.Store reading through to the bucket) and the index of
	// the packs. Required; losing it loses nothing.
	Dir string
	// Hash and Chunker configure a new cluster; a server joining an
	// existing one takes the cluster's (and fails if these are set and
	// differ).
	Hash    node.Alg
	Chunker chunker.Config
	// Retain is how many recent heads the cluster keeps for clients'
	// retained-base syncs. Default 64.
	Retain int
	// PackBytes bounds one pack; a larger commit writes several. Default 64 MiB.
	PackBytes int
	// GCGrace is how long a pack no live root needs stays readable before
	// GC deletes it, so that syncs reading an older root finish. Default 10 min.
	GCGrace time.Duration
	// CacheSize bounds the decoded nodes the local store keeps in memory
	// (tree.Options.CacheSize). Zero: the store's default.
	CacheSize int64
	// Logger receives cluster events. Nil: slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds connecting to etcd. Default 10s.
	DialTimeout time.Duration
}

// State is the cluster's head as a server last saw it.
type State struct {
	// Rev is the etcd revision of the head's last change (0: no head yet).
	Rev int64
	// Head is the authoritative root.
	Head node.Hash
	// Retained are the recent heads kept for retained-base syncs, oldest
	// first; the head is the last.
	Retained []node.Hash
}

// Cluster is one server's handle on a cluster: it reads nodes from the
// bucket through its local cache, follows the head in etcd, and commits
// new heads. It implements tree.Remote for its own store.
type Cluster struct {
	opts  Options
	log   *slog.Logger
	etcd  *clientv3.Client
	obj   *objects
	idx   *index
	store *tree.Store
	alg   node.Alg
	pfx   string

	mu      sync.Mutex
	state   State
	headRev int64 // ModRevision of the head key (0: absent)
	seenRev int64 // the follower has applied every event up to here
	moved   chan struct{}
	subs    []func(State)

	subMu    sync.Mutex // held while subscribers are told of a head
	commitMu sync.Mutex
	stats    Stats

	cancel context.CancelFunc
	done   chan struct{}
}

// Stats count a server's traffic with S3 and etcd.
type Stats struct {
	Gets, Puts, GetBytes, PutBytes int64 // S3 requests and bytes
	Txns, Reads                    int64 // etcd transactions and head reads
	Commits, Conflicts             int64 // heads committed; commits that lost a race
}

func (o *Options) defaults() error {
	if len(o.Etcd) == 0 || o.S3 == "" || o.Bucket == "" || o.Dir == "" {
		return errors.New("cluster: Etcd, S3, Bucket and Dir are required")
	}
	if o.Name == "" {
		o.Name = "default"
	}
	if strings.ContainsAny(o.Name, "/ ") {
		return fmt.Errorf("cluster: name %q: no slashes or spaces", o.Name)
	}
	if o.Retain <= 0 {
		o.Retain = 64
	}
	if o.PackBytes <= 0 {
		o.PackBytes = 64 << 20
	}
	if o.GCGrace <= 0 {
		o.GCGrace = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	return nil
}

func (c *Cluster) key(parts ...string) string { return c.pfx + strings.Join(parts, "/") }

// config is the cluster's fixed configuration, written by its first server.
type config struct {
	Hash    node.Alg       `json:"hash"`
	Chunker chunker.Config `json:"chunker"`
}

// packMeta is a pack's record in etcd.
type packMeta struct {
	Size     uint64 `json:"size"`
	IndexOff uint64 `json:"index_off"`
	IndexLen uint64 `json:"index_len"`
	Entries  int    `json:"entries"`
}

// Open joins (or creates) the cluster: it reads its configuration from
// etcd (writing this server's if there is none), opens the local cache,
// indexes the packs it has not seen and starts following the head.
func Open(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, log: opts.Logger, pfx: "/arbor/" + opts.Name + "/", moved: make(chan struct{}), done: make(chan struct{})}
	var err error
	c.etcd, err = clientv3.New(clientv3.Config{Endpoints: opts.Etcd, DialTimeout: opts.DialTimeout, Logger: nopZap()})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd %v: %w", opts.Etcd, err)
	}
	fail := func(err error) (*Cluster, error) {
		c.closeParts()
		return nil, err
	}
	if c.obj, err = openObjects(ctx, opts); err != nil {
		return fail(err)
	}
	cfg, err := c.loadConfig(ctx)
	if err != nil {
		return fail(err)
	}
	c.alg = cfg.Hash
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return fail(fmt.Errorf("cluster: %w", err))
	}
	if c.idx, err = openIndex(filepath.Join(opts.Dir, "index"), opts.Logger); err != nil {
		return fail(err)
	}
	c.store, err = tree.Open(filepath.Join(opts.Dir, "cache"), &tree.Options{Chunker: cfg.Chunker, Hash: cfg.Hash, NoSync: true, Remote: c, CheckAddresses: true, CacheSize: opts.CacheSize, Logger: opts.Logger})
	if err != nil {
		return fail(fmt.Errorf("cluster: local cache: %w", err))
	}
	rev, err := c.load(ctx)
	if err != nil {
		return fail(err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.follow(fctx, rev)
	return c, nil
}

func (c *Cluster) loadConfig(ctx context.Context) (config, error) {
	want := config{Hash: c.opts.Hash, Chunker: c.opts.Chunker}
	if want.Hash == 0 {
		want.Hash = node.XXH3
	}
	want.Chunker = want.Chunker.WithDefaults()
	b, _ := json.Marshal(want)
	k := c.key("config")
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(b))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return config{}, fmt.Errorf("cluster %s: read configuration from etcd: %w", c.opts.Name, err)
	}
	if resp.Succeeded {
		c.log.Info("arbor cluster: created", "name", c.opts.Name, "hash", want.Hash, "chunker", want.Chunker)
		return want, nil
	}
	var got config
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 || json.Unmarshal(kvs[0].Value, &got) != nil || !got.Hash.Valid() || got.Chunker.Validate() != nil {
		return config{}, fmt.Errorf("cluster %s: unreadable configuration in etcd", c.opts.Name)
	}
	if (c.opts.Hash != 0 && c.opts.Hash != got.Hash) || (c.opts.Chunker != (chunker.Config{}) && c.opts.Chunker.WithDefaults() != got.Chunker) {
		return config{}, fmt.Errorf("cluster %s: %w: the cluster has hash %s and nodes %+v", c.opts.Name, tree.ErrConfigMismatch, got.Hash, got.Chunker)
	}
	return got, nil
}

// Store is the server's local cache of the cluster's nodes: serve it.
// Its refs are this server's view; the authoritative head is in etcd.
func (c *Cluster) Store() *tree.Store { return c.store }

// Hash is the cluster's hash algorithm.
func (c *Cluster) Hash() node.Alg { return c.alg }

// State returns the head as this server last saw it.
func (c *Cluster) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copyState()
}

func (c *Cluster) copyState() State {
	st := c.state
	st.Retained = append([]node.Hash(nil), st.Retained...)
	if st.Head.IsZero() {
		st.Head = node.EmptyRoot(c.alg)
	}
	return st
}

// Subscribe calls fn with the current state and after every head change
// this server learns of (from etcd or its own commits), in order, from one
// goroutine at a time. fn must not call Commit.
func (c *Cluster) Subscribe(fn func(State)) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	c.subs = append(c.subs, fn)
	st := c.copyState()
	c.mu.Unlock()
	fn(st)
}

// Current returns once this server has applied the head etcd holds now
// (a linearizable read): the subscribers have it. One etcd round trip
// when the server is up to date.
func (c *Cluster) Current(ctx context.Context) error {
	resp, err := c.etcd.Get(ctx, c.key("head"))
	if err != nil {
		return fmt.Errorf("cluster %s: read head: %w", c.opts.Name, err)
	}
	c.count(func(s *Stats) { s.Reads++ })
	if len(resp.Kvs) == 0 {
		return nil
	}
	return c.waitRev(ctx, resp.Kvs[0].ModRevision)
}

// Stats returns this server's S3 and etcd traffic so far.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Cluster) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// load reads the cluster's packs and head at one revision, indexing the
// packs this server has not indexed, and returns that revision.
func (c *Cluster) load(ctx context.Context) (int64, error) {
	resp, err := c.etcd.Get(ctx, c.pfx, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster %s: read state from etcd: %w", c.opts.Name, err)
	}
	have, err := c.idx.packs()
	if err != nil {
		return 0, fmt.Errorf("cluster: index: %w", err)
	}
	live := map[uint64]bool{}
	var head, retained []byte
	var headRev int64
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), c.pfx)
		switch {
		case strings.HasPrefix(k, "packs/"):
			id, err := parsePackKey(k)
			if err != nil {
				return 0, err
			}
			live[id] = true
			if !have[id] {
				if err := c.indexPack(ctx, id, kv.Value); err != nil {
					return 0, err
				}
			}
		case k == "head":
			head, headRev = kv.Value, kv.ModRevision
		case k == "retained":
			retained = kv.Value
		}
	}
	for id := range have {
		if !live[id] {
			if err := c.idx.drop(id, c.alg); err != nil {
				return 0, err
			}
		}
	}
	if err := c.setHead(headRev, head, retained, resp.Header.Revision); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func parsePackKey(k string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(k, "packs/"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("cluster: bad pack key %q in etcd", k)
	}
	return id, nil
}

// indexPack reads pack id's index from the bucket and adds it locally.
func (c *Cluster) indexPack(ctx context.Context, id uint64, metaJSON []byte) error {
	var m packMeta
	if err := json.Unmarshal(metaJSON, &m); err != nil {
		return fmt.Errorf("cluster: pack %016x: bad record in etcd: %w", id, err)
	}
	if m.IndexLen > maxPackIndex || m.IndexOff+m.IndexLen+footerSize != m.Size {
		return fmt.Errorf("cluster: pack %016x: %w: index at %d+%d in %d bytes", id, ErrCorruptPack, m.IndexOff, m.IndexLen, m.Size)
	}
	b, err := c.obj.getRange(ctx, packName(id), m.IndexOff, m.IndexLen)
	if err != nil {
		return fmt.Errorf("cluster: index of pack %016x: %w", id, err)
	}
	c.count(func(s *Stats) { s.Gets++; s.GetBytes += int64(len(b)) })
	es, err := decodeIndex(c.alg, b, m.IndexOff)
	if err != nil {
		return fmt.Errorf("cluster: pack %016x: %w", id, err)
	}
	return c.idx.add(id, es)
}

// setHead records a head read from etcd (value nil: none yet) as of
// revision rev, and tells the subscribers if it moved.
func (c *Cluster) setHead(headRev int64, head, retained []byte, rev int64) error {
	h := node.EmptyRoot(c.alg)
	if head != nil {
		var ok bool
		if h, ok = c.alg.HashOf(head); !ok || h.IsZero() {
			return fmt.Errorf("cluster %s: bad head %x in etcd", c.opts.Name, head)
		}
	}
	var rs []node.Hash
	w := c.alg.Size()
	if len(retained)%w != 0 {
		return fmt.Errorf("cluster %s: bad retained list in etcd", c.opts.Name)
	}
	for len(retained) > 0 {
		r, _ := c.alg.HashOf(retained[:w])
		rs = append(rs, r)
		retained = retained[w:]
	}
	// Subscribers hear of heads in order, one call at a time: the
	// follower and a commit of this server may both report one.
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	if headRev <= c.headRev && c.state.Rev != 0 {
		c.seenRev = max(c.seenRev, rev)
		c.wake()
		c.mu.Unlock()
		return nil
	}
	c.headRev = headRev
	c.state = State{Rev: headRev, Head: h, Retained: rs}
	st := c.copyState()
	subs := c.subs
	c.mu.Unlock()
	for _, fn := range subs {
		fn(st)
	}
	// Waiters (a commit that lost its race) resume only once the
	// subscribers have the new head.
	c.mu.Lock()
	c.seenRev = max(c.seenRev, rev, headRev)
	c.wake()
	c.mu.Unlock()
	return nil
}

// wake tells waiters that seenRev or the head moved. Callers hold c.mu.
func (c *Cluster) wake() {
	close(c.moved)
	c.moved = make(chan struct{})
}

// waitRev waits until the follower has applied revision rev.
func (c *Cluster) waitRev(ctx context.Context, rev int64) error {
	for {
		c.mu.Lock()
		seen, ch := c.seenRev, c.moved
		c.mu.Unlock()
		if seen >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow applies etcd's changes to the cluster from revision rev on: new
// packs are indexed before a head that needs them is announced.
func (c *Cluster) follow(ctx context.Context, rev int64) {
	defer close(c.done)
	for ctx.Err() == nil {
		wch := c.etcd.Watch(clientv3.WithRequireLeader(ctx), c.pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for resp := range wch {
			if err := resp.Err(); err != nil {
				c.log.Warn("arbor cluster: watch", "err", err)
				break
			}
			var head, retained []byte
			var headRev int64
			gotHead := false
			for _, ev := range resp.Events {
				k := strings.TrimPrefix(string(ev.Kv.Key), c.pfx)
				switch {
				case strings.HasPrefix(k, "packs/"):
					id, err := parsePackKey(k)
					if err != nil {
						c.log.Error("arbor cluster", "err", err)
						continue
					}
					if ev.Type == clientv3.EventTypeDelete {
						if err := c.idx.drop(id, c.alg); err != nil {
							c.log.Error("arbor cluster: drop pack from index", "pack", fmt.Sprintf("%016x", id), "err", err)
						}
						continue
					}
					if ok, _ := c.idx.has(id); !ok {
						if err := c.indexPackRetry(ctx, id, ev.Kv.Value); err != nil {
							return
						}
					}
				case k == "head":
					head, headRev, gotHead = ev.Kv.Value, ev.Kv.ModRevision, true
				case k == "retained":
					retained = ev.Kv.Value
				}
				rev = max(rev, ev.Kv.ModRevision)
			}
			rev = max(rev, resp.Header.Revision)
			if gotHead {
				if err := c.setHead(headRev, head, retained, rev); err != nil {
					c.log.Error("arbor cluster", "err", err)
				}
			} else {
				c.mu.Lock()
				c.seenRev = max(c.seenRev, rev)
				c.wake()
				c.mu.Unlock()
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch ended (etcd unreachable, or its history compacted):
		// read the whole state again and watch from there.
		for ctx.Err() == nil {
			r, err := c.load(ctx)
			if err == nil {
				rev = r
				break
			}
			c.log.Warn("arbor cluster: reload state", "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// indexPackRetry indexes a new pack, retrying while S3 is unreachable: a
// head that needs it must not be announced before it is indexed.
func (c *Cluster) indexPackRetry(ctx context.Context, id uint64, meta []byte) error {
	for {
		err := c.indexPack(ctx, id, meta)
		if err == nil || errors.Is(err, ErrCorruptPack) {
			if err != nil {
				c.log.Error("arbor cluster: pack index", "pack", fmt.Sprintf("%016x", id), "err", err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // closing: not S3's fault
		}
		c.log.Warn("arbor cluster: index new pack (retrying)", "pack", fmt.Sprintf("%016x", id), "err", err)
		if !sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close stops following and closes the local cache and the clients.
func (c *Cluster) Close() error {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	return c.closeParts()
}

func (c *Cluster) closeParts() error {
	var errs []error
	if c.store != nil {
		errs = append(errs, c.store.Close())
	}
	if c.idx != nil {
		errs = append(errs, c.idx.close())
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Close())
	}
	return errors.Join(errs...)
}

func newPackID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never zero
}

// Fetch implements tree.Remote: it reads the entries from their packs,
// one ranged GET per run of neighbouring entries of a pack, several at once.
func (c *Cluster) Fetch(ctx context.Context, blobs bool, hs []node.Hash) ([][]byte, error) {
	locs, found, err := c.idx.lookup(blobs, hs)
	if err != nil {
		return nil, fmt.Errorf("cluster: index: %w", err)
	}
	type run struct {
		pack     uint64
		off, end uint64
		at       []int
	}
	order := make([]int, 0, len(hs))
	for i := range hs {
		if found[i] {
			order = append(order, i)
		}
	}
	sort.Slice(order, func(a, b int) bool {
		la, lb := locs[order[a]], locs[order[b]]
		if la.pack != lb.pack {
			return la.pack < lb.pack
		}
		return la.off < lb.off
	})
	const gap, maxRun = 256 << 10, 8 << 20
	var runs []*run
	for _, i := range order {
		l := locs[i]
		if n := len(runs); n > 0 {
			r := runs[n-1]
			if r.pack == l.pack && l.off <= r.end+gap && l.off+l.len-r.off <= maxRun {
				r.end = max(r.end, l.off+l.len)
				r.at = append(r.at, i)
				continue
			}
		}
		runs = append(runs, &run{pack: l.pack, off: l.off, end: l.off + l.len, at: []int{i}})
	}
	out := make([][]byte, len(hs))
	var wg sync.WaitGroup
	var emu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	for _, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			b, err := c.obj.getRange(ctx, packName(r.pack), r.off, r.end-r.off)
			if err != nil {
				emu.Lock()
				firstErr = cmpErr(firstErr, err)
				emu.Unlock()
				return
			}
			c.count(func(s *Stats) { s.Gets++; s.GetBytes += int64(len(b)) })
			for _, i := range r.at {
				l := locs[i]
				out[i] = bytes.Clone(b[l.off-r.off : l.off-r.off+l.len])
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Has implements tree.Remote.
func (c *Cluster) Has(ctx context.Context, blobs bool, hs []node.Hash) ([]bool, error) {
	_, found, err := c.idx.lookup(blobs, hs)
	return found, err
}
