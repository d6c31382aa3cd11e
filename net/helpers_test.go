package net

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

func TestMain(m *testing.M) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	code := m.Run()
	cleanupBenchEnv() // the benchmarks' shared server and client stores
	os.Exit(code)
}

// smallChunks makes small trees several levels deep.
var (
	smallChunks  = chunker.Config{LeafFanout: 4, BranchFanout: 4}
	smallChunks2 = chunker.Config{LeafFanout: 8, BranchFanout: 4}
)

type testServer struct {
	srv   *Server
	store *tree.Store
	addr  string
	fp    string
	dir   string
}

var testTokens = []Token{{Token: "tok-alice-0123456789", ClientID: "alice"}, {Token: "tok-bob-0123456789", ClientID: "bob"}}

func openStore(t testing.TB, dir string, cfg chunker.Config) *tree.Store {
	t.Helper()
	s, err := tree.Open(dir, &tree.Options{Chunker: cfg, NoSync: true, CacheSize: 16 << 20, PebbleCacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // a no-op (ErrClosed) if the test closed it
	return s
}

func startServer(t testing.TB, cfg chunker.Config, mut func(*ServerOptions)) *testServer {
	t.Helper()
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "data"), cfg)
	t.Cleanup(func() { st.Close() })
	ts, _ := serveStore(t, st, dir, mut)
	return ts
}

// serveStore serves st with the certificate in dir/cert. stop ends the
// server (it also ends at cleanup).
func serveStore(t testing.TB, st *tree.Store, dir string, mut func(*ServerOptions)) (ts *testServer, stop func()) {
	t.Helper()
	opts := ServerOptions{Tokens: testTokens, CertDir: filepath.Join(dir, "cert")}
	if mut != nil {
		mut(&opts)
	}
	srv, err := NewServer(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &testServer{srv: srv, store: st, addr: srv.Addr().String(), fp: srv.Fingerprint(), dir: dir}, stop
}

func (ts *testServer) opts(token string) ClientOptions {
	return ClientOptions{Server: ts.addr, Token: token, Fingerprint: ts.fp}
}

func rec(i int) []byte { return []byte(fmt.Sprintf("key-%06d", i)) }

func val(i, ver int) []byte { return []byte(fmt.Sprintf("value-%d-v%d", i, ver)) }

// put writes records [from, to) with version ver to ref head.
func put(t testing.TB, s *tree.Store, from, to, ver int) node.Hash {
	t.Helper()
	var edits []tree.Edit
	for i := from; i < to; i++ {
		edits = append(edits, tree.Edit{Key: rec(i), Value: val(i, ver)})
	}
	h, err := s.Update(context.Background(), HeadRef, edits)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func edit(t testing.TB, s *tree.Store, edits ...tree.Edit) node.Hash {
	t.Helper()
	h, err := s.Update(context.Background(), HeadRef, edits)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func ref(t testing.TB, s *tree.Store, name string) node.Hash {
	t.Helper()
	h, err := s.Root(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t testing.TB, s *tree.Store, root node.Hash, key []byte) *string {
	t.Helper()
	v, err := s.Get(context.Background(), root, key)
	if err != nil {
		return nil
	}
	str := string(v)
	return &str
}

func mustSync(t testing.TB, s *tree.Store, opts ClientOptions) *SyncResult {
	t.Helper()
	res, err := Sync(context.Background(), s, opts)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return res
}

// checkConverged asserts the client's base and head equal the server's root
// and that the client's tree verifies.
func checkConverged(t testing.TB, ts *testServer, c *tree.Store) {
	t.Helper()
	want := ref(t, ts.store, HeadRef)
	if b := ref(t, c, BaseRef); b != want {
		t.Fatalf("client base %s, server root %s", b.Short(), want.Short())
	}
	if h := ref(t, c, HeadRef); h != want {
		t.Fatalf("client head %s, server root %s", h.Short(), want.Short())
	}
	if _, err := c.Verify(context.Background(), want); err != nil {
		t.Fatalf("client tree does not verify: %v", err)
	}
}
