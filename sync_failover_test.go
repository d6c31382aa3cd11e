package arbor_test

import (
	"context"
	stdnet "net"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
)

// TestSyncServersFailover: SyncOptions.Servers reaches net's failover
// through DB.Sync and ServerRootFrom: a first server that does not listen
// is passed over.
func TestSyncServersFailover(t *testing.T) {
	srv, srvDB := startServer(t, nil)
	ctx := context.Background()
	if err := srvDB.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	pc, err := stdnet.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	live := srv.Addr().String()
	opts := arbor.SyncOptions{Servers: []string{dead, live}, Token: testToken, Fingerprint: srv.Fingerprint(), DialTimeout: 2 * time.Second}

	client := openDB(t)
	res, err := client.Sync(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Server != live || res.Failovers != 1 {
		t.Fatalf("server %q, failovers %d; want %q, 1", res.Server, res.Failovers, live)
	}
	if v, err := client.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("k = %q, %v", v, err)
	}
	root, server, err := arbor.ServerRootFrom(ctx, opts)
	if want, _ := srvDB.Root(ctx); err != nil || root != want || server != live {
		t.Fatalf("ServerRootFrom: %s from %q, %v", root, server, err)
	}
}
