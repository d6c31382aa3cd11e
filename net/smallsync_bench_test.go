package net

import (
	"context"
	"net"
	"testing"

	"github.com/arbor-sync/arbor/bench/linkemu"
	"github.com/arbor-sync/arbor/tree"
)

// BenchmarkSmallSyncWire measures the bytes on the wire (UDP payloads both
// ways, through a counting relay) of a d = 0 and a d = 10 sync of a
// 10 000-record replica, with a full TLS handshake (no session kept) and
// with a resumed session, in the same run.
func BenchmarkSmallSyncWire(b *testing.B) {
	ts := startServer(b, smallChunks2, nil)
	put(b, ts.store, 0, 10_000, 1)
	for _, link := range []linkemu.Profile{linkemu.LAN, linkemu.WAN} {
		relay, err := linkemu.NewUDPRelay(link, ts.srv.Addr().(*net.UDPAddr), 1)
		if err != nil {
			b.Fatal(err)
		}
		defer relay.Close()
		opts := ts.opts(alice)
		opts.Server = relay.Addr().String()
		c := openStore(b, b.TempDir(), smallChunks2)
		mustSync(b, c, opts) // the clone; it also keeps a session ticket
		wire := func() int64 {
			up, down := relay.Stats()
			return up.Bytes + down.Bytes
		}
		for _, d := range []int{0, 10} {
			for _, resume := range []bool{false, true} {
				name := map[bool]string{false: "full-handshake", true: "resumed"}[resume]
				b.Run(link.Name+"/"+name+"/d="+map[int]string{0: "0", 10: "10"}[d], func(b *testing.B) {
					var bytes, n, early int64
					for i := 0; i < b.N; i++ {
						o := opts
						o.NoSessionResumption = !resume
						for k := range d {
							edit(b, ts.store, tree.Edit{Key: rec(k * 97), Value: []byte{byte(i), byte(k)}})
						}
						before := wire()
						res, err := Sync(context.Background(), c, o)
						if err != nil {
							b.Fatal(err)
						}
						if res.Resumed != resume {
							b.Fatalf("resumed %v, want %v", res.Resumed, resume)
						}
						if res.EarlyData {
							early++
						}
						bytes += wire() - before
						n++
					}
					b.ReportMetric(float64(bytes)/float64(n), "wire-bytes/sync")
					b.ReportMetric(float64(early)/float64(n), "early-data")
				})
			}
		}
	}
}
