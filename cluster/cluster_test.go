package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/internal/clustertest"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	os.Exit(m.Run())
}

var (
	testChunks = chunker.Config{LeafFanout: 8, BranchFanout: 8}
	testTokens = []arbornet.Token{{Token: "tok-alice-0123456789", ClientID: "alice"}, {Token: "tok-bob-0123456789", ClientID: "bob"}}
)

// env is a running cluster: etcd, S3 and the servers started on it.
type env struct {
	t       *testing.T
	etcd    *clustertest.Etcd
	s3      *clustertest.S3
	bucket  string
	name    string
	servers []*member
}

type member struct {
	c    *Cluster
	srv  *arbornet.Server
	addr string
	stop func()
}

// TestCluster runs every scenario on one etcd and one SeaweedFS (which
// takes seconds to start), each with its own bucket and cluster name. The
// scenario that stops S3 runs last.
func TestCluster(t *testing.T) {
	etcd, s3 := clustertest.Env(t)
	for i, sc := range []struct {
		name string
		run  func(*env)
	}{
		{"SyncsThroughAnyServer", testSyncsThroughAnyServer},
		{"ConcurrentPushesModel", testConcurrentPushesModel},
		{"ImportAndGC", testImportAndGC},
		{"WatchAcrossServers", testWatchAcrossServers},
		{"EtcdMemberDown", testEtcdMemberDown},
		{"ServersStartTogether", testServersStartTogether},
		{"S3Down", testS3Down},
	} {
		t.Run(sc.name, func(t *testing.T) {
			sc.run(&env{t: t, etcd: etcd, s3: s3, bucket: s3.Bucket(t), name: fmt.Sprintf("c%d", i)})
		})
	}
}

func (e *env) options(dir string) Options {
	return Options{Etcd: e.etcd.Endpoints(), S3: e.s3.Endpoint(), Bucket: e.bucket, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey, Region: e.s3.Region,
		Name: e.name, Dir: dir, Chunker: testChunks, GCGrace: time.Hour}
}

// start opens a cluster member and serves it on loopback.
func (e *env) start(mut func(*Options)) *member {
	t := e.t
	t.Helper()
	o := e.options(filepath.Join(t.TempDir(), "server"))
	if mut != nil {
		mut(&o)
	}
	ctx := context.Background()
	c, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := c.NewServer(ctx, arbornet.ServerOptions{Tokens: testTokens})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	var once sync.Once
	m := &member{c: c, srv: srv, addr: srv.Addr().String()}
	m.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			c.Close()
		})
	}
	t.Cleanup(m.stop)
	e.servers = append(e.servers, m)
	return m
}

func openClient(t testing.TB) *tree.Store {
	t.Helper()
	s, err := tree.Open(t.TempDir(), &tree.Options{Chunker: testChunks, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (m *member) opts(token string) arbornet.ClientOptions {
	return arbornet.ClientOptions{Server: m.addr, Token: token, Fingerprint: m.srv.Fingerprint()}
}

func syncVia(t testing.TB, s *tree.Store, m *member, token string) *arbornet.SyncResult {
	t.Helper()
	res, err := arbornet.Sync(context.Background(), s, m.opts(token))
	if err != nil {
		t.Fatalf("sync via %s: %v", m.addr, err)
	}
	return res
}

func write(t testing.TB, s *tree.Store, edits map[string]*string) {
	t.Helper()
	var es []tree.Edit
	for k, v := range edits {
		e := tree.Edit{Key: []byte(k)}
		if v != nil {
			e.Value = []byte(*v)
		} else {
			e.Delete = true
		}
		es = append(es, e)
	}
	if _, err := s.Update(context.Background(), arbornet.HeadRef, es); err != nil {
		t.Fatal(err)
	}
}

func records(t testing.TB, s *tree.Store) map[string]string {
	t.Helper()
	root, err := s.Root(arbornet.HeadRef)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	it := s.NewIterator(context.Background(), root, tree.Range{})
	for it.Next() {
		v, err := s.ReadValue(context.Background(), it.Value())
		if err != nil {
			t.Fatal(err)
		}
		out[string(it.Key())] = string(v)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func strp(s string) *string { return &s }

// waitHead waits until every server has adopted head.
func (e *env) waitHead(head node.Hash) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range e.servers {
		for {
			r, err := m.c.Store().Root(arbornet.HeadRef)
			if err == nil && r == head {
				break
			}
			if time.Now().After(deadline) {
				for _, o := range e.servers {
					lr, _ := o.c.Store().Root(arbornet.HeadRef)
					st := o.c.State()
					e.t.Logf("server %s: local head %s, cluster state rev %d head %s, stats %+v", o.addr, lr.Short(), st.Rev, st.Head.Short(), o.c.Stats())
				}
				e.t.Fatalf("server %s has head %s, want %s", m.addr, r.Short(), head.Short())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// testSyncsThroughAnyServer: three servers over one etcd and one
// bucket. Writes pushed through one are seen through the others, by clone,
// retained-base pull and walk; the cluster's root equals a single-node
// store's root of the same records; every server presents one certificate.
func testSyncsThroughAnyServer(e *env) {
	t := e.t
	a, b, c := e.start(nil), e.start(nil), e.start(nil)
	if a.srv.Fingerprint() != b.srv.Fingerprint() || b.srv.Fingerprint() != c.srv.Fingerprint() {
		t.Fatalf("servers of one cluster present different certificates: %s %s %s", a.srv.Fingerprint(), b.srv.Fingerprint(), c.srv.Fingerprint())
	}
	model := map[string]string{}
	alice := openClient(t)
	syncVia(t, alice, a, "tok-alice-0123456789") // clone the empty cluster: alice's writes are new
	edits := map[string]*string{}
	for i := range 3000 {
		k, v := fmt.Sprintf("k%05d", i), fmt.Sprintf("v%d", i)
		edits[k], model[k] = strp(v), v
	}
	big := string(make([]byte, 200<<10)) // out of line: value blobs in the packs
	edits["big"], model["big"] = &big, big
	write(t, alice, edits)
	res := syncVia(t, alice, a, "tok-alice-0123456789")
	head := a.c.State().Head
	if res.Root != head {
		t.Fatalf("sync root %s, cluster head %s", res.Root.Short(), head.Short())
	}
	e.waitHead(head)

	// The same records in a single-node store give the same root.
	single := openClient(t)
	write(t, single, edits)
	if r, _ := single.Root(arbornet.HeadRef); r != head {
		t.Fatalf("single-node root %s, cluster root %s", r.Short(), head.Short())
	}

	// Bob clones through b, whose cache holds none of it: the subtree
	// stream reads ahead in batches, a few ranged GETs for many nodes.
	bob := openClient(t)
	gets := b.c.Stats().Gets
	syncVia(t, bob, b, "tok-bob-0123456789")
	gets = b.c.Stats().Gets - gets
	if got := records(t, bob); len(got) != len(model) || got["k00042"] != "v42" || got["big"] != big {
		t.Fatalf("clone through another server: %d records", len(got))
	}
	rep, err := bob.Verify(context.Background(), head)
	if err != nil {
		t.Fatal(err)
	}
	if gets*4 > int64(rep.Nodes) {
		t.Errorf("a cold server sent %d nodes with %d GETs: the stream is not reading ahead in batches", rep.Nodes, gets)
	}
	t.Logf("cold clone through b: %d nodes, %d blobs, %d GETs", rep.Nodes, rep.Blobs, gets)
	// Bob changes some through c; alice pulls through b (retained base).
	write(t, bob, map[string]*string{"k00001": strp("bob"), "k00002": nil, "new": strp("n")})
	syncVia(t, bob, c, "tok-bob-0123456789")
	model["k00001"], model["new"] = "bob", "n"
	delete(model, "k00002")
	res = syncVia(t, alice, b, "tok-alice-0123456789")
	if res.Path == "walk" {
		t.Errorf("pull through another server walked: the retained base is not shared")
	}
	if got := records(t, alice); !equalMaps(got, model) {
		for k, v := range got {
			if w, ok := model[k]; !ok || w != v {
				t.Errorf("alice has %q=%.20q, model %.20q (%v)", k, v, w, ok)
			}
		}
		for k := range model {
			if _, ok := got[k]; !ok {
				t.Errorf("alice lacks %q", k)
			}
		}
		t.Fatalf("alice after pull (%s): %d records, want %d", res.Path, len(got), len(model))
	}
	// A forced walk through the third server agrees.
	o := c.opts("tok-alice-0123456789")
	o.ForceWalk = true
	if _, err := arbornet.Sync(context.Background(), alice, o); err != nil {
		t.Fatal(err)
	}
	st := a.c.Stats()
	t.Logf("server a: %+v", st)
	if st.Commits < 1 || st.Puts < 1 {
		t.Fatalf("server a committed nothing to the cluster: %+v", st)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// testImportAndGC: a single-node store imported into an empty
// cluster has the same root; after more commits, GC (two phases) deletes
// the packs no live root needs, and a server with a cold cache still
// serves the head whole.
func testImportAndGC(e *env) {
	t := e.t
	ctx := context.Background()
	single := openClient(t)
	edits := map[string]*string{}
	for i := range 5000 {
		edits[fmt.Sprintf("k%05d", i)] = strp(fmt.Sprintf("v%d", i))
	}
	write(t, single, edits)
	root, _ := single.Root(arbornet.HeadRef)
	a := e.start(func(o *Options) { o.Retain = 2; o.GCGrace = time.Nanosecond })
	st, err := a.c.Import(ctx, single, a.c.State().Head, root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Head != root {
		t.Fatalf("imported head %s, store root %s", st.Head.Short(), root.Short())
	}
	// Rewrite everything a few times: the imported packs die.
	cl := openClient(t)
	syncVia(t, cl, a, "tok-alice-0123456789")
	for ver := range 3 {
		ed := map[string]*string{}
		for i := range 5000 {
			ed[fmt.Sprintf("k%05d", i)] = strp(fmt.Sprintf("v%d-%d", i, ver))
		}
		write(t, cl, ed)
		syncVia(t, cl, a, "tok-alice-0123456789")
	}
	head := a.c.State().Head
	g1, err := a.c.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := a.c.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc 1 %+v; gc 2 %+v", g1, g2)
	if g1.Condemned == 0 || g2.Deleted != g1.Condemned {
		t.Fatalf("gc condemned %d then deleted %d packs; want the dead import packs condemned, then deleted", g1.Condemned, g2.Deleted)
	}
	// A fresh server (cold cache) serves the head completely.
	b := e.start(nil)
	fresh := openClient(t)
	syncVia(t, fresh, b, "tok-bob-0123456789")
	if r, _ := fresh.Root(arbornet.HeadRef); r != head {
		t.Fatalf("clone after GC: root %s, head %s", r.Short(), head.Short())
	}
	if _, err := fresh.Verify(ctx, head); err != nil {
		t.Fatalf("clone after GC: %v", err)
	}
}
