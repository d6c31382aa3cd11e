package main

import (
	"cmp"
	"context"
	"fmt"
	stdnet "net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/arbor-sync/arbor/bench/linkemu"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/zeebo/xxh3"
)

// The systems a sync case can measure.
const (
	sysRetained = "Arbor sync, retained base"
	sysWalk     = "Arbor sync, walk"
	sysClone    = "Arbor initial clone"
	sysPush     = "Arbor sync, push"
	sysFullCopy = "full copy (TCP)"
	sysRsync    = "rsync of sorted dump (TCP)"
	sysRawQUIC  = "raw quic-go stream (same bytes)"
)

// Loopback is the profile that shapes nothing: the relays still carry (and
// count) every byte, so bytes are measured the same way on every profile.
var Loopback = linkemu.Profile{Name: "loopback"}

// SyncRow is one system's figures in one SyncCase.
type SyncRow struct {
	System string `json:"system"`
	// Time is the wall time of the transfer, in seconds, from dialling to
	// the last record stored (Arbor, full copy) or written (rsync).
	Time Stat `json:"time_s"`
	// WireBytes is what both directions put on the emulated link: UDP
	// payload (QUIC) or TCP payload, retransmissions included.
	WireBytes Stat `json:"wire_bytes"`
	// StreamBytes is Arbor's own count at the QUIC stream level.
	StreamBytes int64 `json:"stream_bytes,omitempty"`
	// RoundTrips is Arbor's request/response exchanges, handshake
	// included; 0 when not measured.
	RoundTrips int `json:"round_trips,omitempty"`
	// Records is how many records the sync pulled (Arbor) or the copy
	// carried.
	Records int `json:"records,omitempty"`
	// Skipped says why the system did not run; then nothing else is set.
	Skipped string `json:"skipped,omitempty"`
}

// SyncCase is one W(n, d) on one link profile: every system in the same
// runs, in an order that rotates from run to run.
type SyncCase struct {
	Profile string `json:"profile"`
	Link    string `json:"link"`
	N       int    `json:"n"`
	D       int    `json:"d"`
	Ideal   int64  `json:"ideal_bytes"`
	// PushIdeal is the ideal of the push row, which sends the inverse edits.
	PushIdeal int64 `json:"push_ideal_bytes"`
	Dataset   int64 `json:"dataset_bytes"`
	Runs      int   `json:"runs"`
	// Clustered is set when the d changes lie in one key range.
	Clustered bool       `json:"clustered"`
	Rows      []*SyncRow `json:"rows"`
	Verified  bool       `json:"verified"` // every run ended with equal roots (Arbor) or equal bytes (baselines)
}

// Row returns the row of system, or nil.
func (c *SyncCase) Row(system string) *SyncRow {
	for _, r := range c.Rows {
		if r.System == system {
			return r
		}
	}
	return nil
}

func describe(p linkemu.Profile) string {
	if p.RTT == 0 && p.Bandwidth == 0 && p.Loss == 0 {
		return "relay only, no shaping"
	}
	s := fmt.Sprintf("%v RTT, %g Mbit/s", p.RTT, p.Bandwidth/1e6)
	if p.Loss > 0 {
		s += fmt.Sprintf(", %.0f%% loss", p.Loss*100)
	}
	return s
}

// syncEnv is a server with W(n, d)'s changed side as head and the base
// retained, a client template at the base, and the baselines' servers
// holding the same records.
type syncEnv struct {
	w         *Workload
	dir       string
	store     *tree.Store
	srv       *arbornet.Server
	cancel    context.CancelFunc
	served    chan error
	token, fp string
	base      node.Hash
	changed   node.Hash
	template  string // closed client store at the base
	pushTmpl  string // closed client store synced at the changed side, with the base as local changes
	noSync    bool
	oldDump   string // the base side's sorted dump
	newHash   uint64 // xxh3 of the changed side's dump
	copySrv   *copyServer
	quicSrv   *quicServer
	rsync     string
	rsyncd    *rsyncd
	seq       int
}

func newSyncEnv(ctx context.Context, cfg *Config, w *Workload, withBaselines bool) (env *syncEnv, err error) {
	dir, err := os.MkdirTemp(cfg.TmpDir, "sync-")
	if err != nil {
		return nil, err
	}
	e := &syncEnv{w: w, dir: dir, token: "bench-token", noSync: !cfg.Sync}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	sdir := filepath.Join(dir, "server")
	s, base, _, err := buildArbor(ctx, w, sdir, cfg.Sync, false)
	if err != nil {
		return e, err
	}
	e.base = base
	if err := s.Close(); err != nil {
		return e, err
	}
	e.template = filepath.Join(dir, "client-template")
	if err := copyStore(sdir, e.template); err != nil {
		return e, err
	}
	if err := setRefs(ctx, e.template, base, "head", arbornet.BaseRef); err != nil {
		return e, err
	}
	if e.store, err = tree.Open(sdir, &tree.Options{NoSync: !cfg.Sync}); err != nil {
		return e, err
	}
	e.srv, err = arbornet.NewServer(e.store, arbornet.ServerOptions{
		Tokens:  []arbornet.Token{{Token: e.token, ClientID: "bench-client"}},
		CertDir: filepath.Join(dir, "cert"),
		Retain:  cmp.Or(cfg.Retain, 8),
	})
	if err != nil {
		return e, err
	}
	e.fp = e.srv.Fingerprint()
	if err := e.srv.Listen("127.0.0.1:0"); err != nil {
		return e, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.served = cancel, make(chan error, 1)
	go func() { e.served <- e.srv.Serve(sctx) }()

	// A first sync with nothing to do makes the server publish (retain)
	// the base root, as the client's last sync would have.
	if _, _, err := e.syncOnce(ctx, e.srv.Addr().String(), e.template, false, base); err != nil {
		return e, fmt.Errorf("priming sync: %w", err)
	}
	// Now the d changes land on the server.
	b, err := e.store.NewBatch()
	if err != nil {
		return e, err
	}
	if e.changed, err = b.Apply(ctx, base, w.Edits()); err != nil {
		b.Discard()
		return e, err
	}
	b.SetRef("head", e.changed)
	if err := b.Commit(ctx); err != nil {
		return e, err
	}
	// The push client: last synced at the changed side, and holding the
	// base side as d local changes (the inverse of W's edits: again 60%
	// updates, 20% inserts, 20% deletes).
	e.pushTmpl = filepath.Join(dir, "push-template")
	if err := copyStore(e.template, e.pushTmpl); err != nil {
		return e, err
	}
	if err := e.makePushTemplate(ctx); err != nil {
		return e, err
	}
	if !withBaselines {
		return e, nil
	}
	newDump := dump(w.Changed)
	e.newHash = xxh3.Hash(newDump)
	if e.copySrv, err = newCopyServer(newDump); err != nil {
		return e, err
	}
	if e.quicSrv, err = newQUICServer(newDump); err != nil {
		return e, err
	}
	if e.rsync = rsyncPath(); e.rsync != "" {
		rdir := filepath.Join(dir, "rsync-server")
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			return e, err
		}
		if err := os.WriteFile(filepath.Join(rdir, "dump.bin"), newDump, 0o644); err != nil {
			return e, err
		}
		e.oldDump = filepath.Join(dir, "old-dump.bin")
		if err := os.WriteFile(e.oldDump, dump(w.Base), 0o644); err != nil {
			return e, err
		}
		if e.rsyncd, err = startRsyncd(ctx, e.rsync, rdir, dir); err != nil {
			return e, err
		}
	}
	return e, nil
}

// Close stops the servers and removes the environment's files.
func (e *syncEnv) Close() {
	if e.cancel != nil {
		e.cancel()
		<-e.served
	}
	if e.store != nil {
		e.store.Close()
	}
	if e.copySrv != nil {
		e.copySrv.Close()
	}
	if e.quicSrv != nil {
		e.quicSrv.Close()
	}
	if e.rsyncd != nil {
		e.rsyncd.Close()
	}
	os.RemoveAll(e.dir)
}

func (e *syncEnv) scratch(name string) string {
	e.seq++
	return filepath.Join(e.dir, fmt.Sprintf("%s-%d", name, e.seq))
}

func (e *syncEnv) makePushTemplate(ctx context.Context) error {
	s, err := tree.Open(e.pushTmpl, &tree.Options{NoSync: true, MustExist: true})
	if err != nil {
		return err
	}
	defer s.Close()
	b, err := s.NewBatch()
	if err != nil {
		return err
	}
	changed, err := b.Apply(ctx, e.base, e.w.Edits())
	if err != nil {
		b.Discard()
		return err
	}
	if changed != e.changed {
		b.Discard()
		return fmt.Errorf("push template: the same edits gave root %s on the client and %s on the server", changed.Short(), e.changed.Short())
	}
	b.SetRef(arbornet.BaseRef, changed)
	b.SetRef("head", e.base)
	return b.Commit(ctx)
}

// syncOnce syncs a fresh copy of the client store template (or, if
// template is empty, an empty store: a clone) with the server at addr,
// checks that client and server both end at root want, and returns the
// result and the wall time of the sync alone (preparing and opening the
// client store is not timed).
func (e *syncEnv) syncOnce(ctx context.Context, addr, template string, walk bool, want node.Hash) (*arbornet.SyncResult, time.Duration, error) {
	return e.syncChecked(ctx, addr, template, walk, want, func() (node.Hash, error) { return e.store.Root("head") })
}

// syncChecked is syncOnce with the server's head read by serverHead (a
// cluster server's, say, instead of the environment's own server).
func (e *syncEnv) syncChecked(ctx context.Context, addr, template string, walk bool, want node.Hash, serverHead func() (node.Hash, error)) (*arbornet.SyncResult, time.Duration, error) {
	dir := e.scratch("client")
	defer os.RemoveAll(dir)
	if template != "" {
		if err := copyStore(template, dir); err != nil {
			return nil, 0, err
		}
	}
	s, err := tree.Open(dir, &tree.Options{NoSync: e.noSync})
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	start := time.Now()
	res, err := arbornet.Sync(ctx, s, arbornet.ClientOptions{Server: addr, Token: e.token, Fingerprint: e.fp, ForceWalk: walk})
	elapsed := time.Since(start)
	if err != nil {
		return nil, 0, err
	}
	srv, err := serverHead()
	if err != nil {
		return nil, 0, err
	}
	head, err := s.Root("head")
	if err != nil {
		return nil, 0, err
	}
	if res.Root != want || head != want || srv != want {
		return nil, 0, fmt.Errorf("after sync the client's root is %s (result %s), the server's %s, want %s", head.Short(), res.Root.Short(), srv.Short(), want.Short())
	}
	return res, elapsed, nil
}

// resetServer moves the server's head back to root (after a push run).
func (e *syncEnv) resetServer(ctx context.Context, root node.Hash) error {
	b, err := e.store.NewBatch()
	if err != nil {
		return err
	}
	b.SetRef("head", root)
	return b.Commit(ctx)
}

// measure runs one transfer of system through the relays and returns its
// wall time, wire bytes and, for Arbor, the sync result.
//
// With ARBOR_BENCH_PROFILE=DIR set, each transfer writes a CPU profile of
// the whole process (client and server) to DIR/<system>.pprof (the last
// run's), for finding where a sync's time goes.
func (e *syncEnv) measure(ctx context.Context, cfg *Config, system string, rl *relays) (time.Duration, int64, *arbornet.SyncResult, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if dir := os.Getenv("ARBOR_BENCH_PROFILE"); dir != "" {
		name := strings.NewReplacer(" ", "_", ",", "", "(", "", ")", "").Replace(system)
		if f, err := os.Create(filepath.Join(dir, name+".pprof")); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			} else {
				f.Close()
			}
		}
	}
	switch system {
	case sysRetained, sysWalk, sysClone:
		tmpl := e.template
		if system == sysClone {
			tmpl = ""
		}
		before := rl.arbor.bytes()
		res, d, err := e.syncOnce(ctx, rl.arbor.udp.Addr().String(), tmpl, system == sysWalk, e.changed)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		want := map[string]string{sysRetained: "retained", sysWalk: "walk", sysClone: "walk"}[system]
		if res.Path != want {
			return 0, 0, nil, 0, fmt.Errorf("%s took the %q path, want %q", system, res.Path, want)
		}
		return d, rl.arbor.bytes() - before, res, res.Pulled, nil
	case sysPush:
		before := rl.arbor.bytes()
		res, d, err := e.syncOnce(ctx, rl.arbor.udp.Addr().String(), e.pushTmpl, false, e.base)
		if rerr := e.resetServer(ctx, e.changed); err == nil {
			err = rerr
		}
		if err != nil {
			return 0, 0, nil, 0, err
		}
		if res.Pushed != e.w.D || res.Accepted != e.w.D {
			return 0, 0, nil, 0, fmt.Errorf("push: %d changes pushed, %d accepted, want %d", res.Pushed, res.Accepted, e.w.D)
		}
		return d, rl.arbor.bytes() - before, res, res.Pushed, nil
	case sysFullCopy:
		dir := e.scratch("fullcopy")
		defer os.RemoveAll(dir)
		db, err := openRawPebble(dir)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		defer db.Close()
		before := rl.copy.bytes()
		start := time.Now()
		n, h, err := fullCopy(ctx, rl.copy.tcp.Addr(), db, KeySize+e.w.ValueSize, cfg.Sync)
		d := time.Since(start)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		if h != e.newHash {
			return 0, 0, nil, 0, fmt.Errorf("full copy: received %d bytes that differ from the server's records", n)
		}
		return d, rl.copy.bytes() - before, nil, int(n / int64(KeySize+e.w.ValueSize)), nil
	case sysRawQUIC:
		before := rl.quic.bytes()
		start := time.Now()
		n, h, err := quicFetch(ctx, rl.quic.udp.Addr().String())
		d := time.Since(start)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		if h != e.newHash {
			return 0, 0, nil, 0, fmt.Errorf("raw quic: received %d bytes that differ from the server's", n)
		}
		return d, rl.quic.bytes() - before, nil, int(n / int64(KeySize+e.w.ValueSize)), nil
	case sysRsync:
		dir := e.scratch("rsync")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, 0, nil, 0, err
		}
		defer os.RemoveAll(dir)
		dest := filepath.Join(dir, "dump.bin")
		if err := copyFile(e.oldDump, dest); err != nil {
			return 0, 0, nil, 0, err
		}
		before := rl.rsync.bytes()
		start := time.Now()
		err := rsyncPull(ctx, e.rsync, rl.rsync.tcp.Addr(), "dump.bin", dest)
		d := time.Since(start)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		got, err := os.ReadFile(dest)
		if err != nil {
			return 0, 0, nil, 0, err
		}
		if xxh3.Hash(got) != e.newHash {
			return 0, 0, nil, 0, fmt.Errorf("rsync: the client's dump differs from the server's")
		}
		return d, rl.rsync.bytes() - before, nil, 0, nil
	}
	return 0, 0, nil, 0, fmt.Errorf("unknown system %q", system)
}

// relay is one emulated link in front of one server.
type relay struct {
	udp *linkemu.UDPRelay
	tcp *linkemu.TCPRelay
}

func (r *relay) bytes() int64 {
	var up, down linkemu.LinkStats
	switch {
	case r == nil:
		return 0
	case r.udp != nil:
		up, down = r.udp.Stats()
	case r.tcp != nil:
		up, down = r.tcp.Stats()
	}
	return up.Bytes + down.Bytes
}

func (r *relay) close() {
	if r == nil {
		return
	}
	if r.udp != nil {
		r.udp.Close()
	}
	if r.tcp != nil {
		r.tcp.Close()
	}
}

// relays are the links in front of each server for one profile.
type relays struct{ arbor, quic, copy, rsync *relay }

func (e *syncEnv) newRelays(p linkemu.Profile, seed uint64) (*relays, error) {
	rl := &relays{}
	u, err := linkemu.NewUDPRelay(p, e.srv.Addr().(*stdnet.UDPAddr), seed)
	if err != nil {
		return nil, err
	}
	rl.arbor = &relay{udp: u}
	if e.quicSrv != nil {
		if u, err = linkemu.NewUDPRelay(p, e.quicSrv.Addr(), seed+10); err != nil {
			rl.close()
			return nil, err
		}
		rl.quic = &relay{udp: u}
	}
	if e.copySrv != nil {
		t, err := linkemu.NewTCPRelay(p, e.copySrv.Addr(), seed+20)
		if err != nil {
			rl.close()
			return nil, err
		}
		rl.copy = &relay{tcp: t}
	}
	if e.rsyncd != nil {
		t, err := linkemu.NewTCPRelay(p, e.rsyncd.addr, seed+30)
		if err != nil {
			rl.close()
			return nil, err
		}
		rl.rsync = &relay{tcp: t}
	}
	return rl, nil
}

func (rl *relays) close() {
	rl.arbor.close()
	rl.quic.close()
	rl.copy.close()
	rl.rsync.close()
}

// runCase measures systems for the environment's workload on profile p,
// cfg.Runs times (or runs, if positive), rotating the order every run.
func (e *syncEnv) runCase(ctx context.Context, cfg *Config, p linkemu.Profile, systems []string, runs int) (*SyncCase, error) {
	if runs <= 0 {
		runs = cfg.Runs
	}
	c := &SyncCase{Profile: p.Name, Link: describe(p), N: e.w.N, D: e.w.D, Ideal: e.w.IdealBytes(), PushIdeal: e.w.PushIdealBytes(), Dataset: e.w.DatasetBytes(), Runs: runs, Clustered: e.w.Clustered, Verified: true}
	rl, err := e.newRelays(p, cfg.Seed)
	if err != nil {
		return nil, err
	}
	defer rl.close()
	times := map[string][]float64{}
	wire := map[string][]float64{}
	var active []string
	for _, s := range systems {
		row := &SyncRow{System: s}
		c.Rows = append(c.Rows, row)
		if s == sysRsync && e.rsync == "" {
			row.Skipped = "skipped: rsync not installed (apt-get install -y rsync)"
			continue
		}
		if (s == sysClone || s == sysRawQUIC) && slices.Contains(cfg.NoCloneOn, p.Name) {
			row.Skipped = "skipped in the " + cfg.Suite + " suite to keep it short (one clone at 2% loss takes 2–14 s); run -suite full"
			continue
		}
		active = append(active, s)
	}
	for run := range runs {
		for i := range active {
			s := active[(i+run)%len(active)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			d, wb, res, recs, err := e.measure(ctx, cfg, s, rl)
			if err != nil {
				return nil, fmt.Errorf("%s on %s, W(%d, %d): %w", s, p.Name, e.w.N, e.w.D, err)
			}
			times[s] = append(times[s], d.Seconds())
			wire[s] = append(wire[s], float64(wb))
			row := c.Row(s)
			row.Records = recs
			if res != nil {
				row.StreamBytes = res.BytesSent + res.BytesReceived
				row.RoundTrips = res.RoundTrips
			}
		}
	}
	for _, s := range active {
		row := c.Row(s)
		row.Time, row.WireBytes = NewStat(times[s]), NewStat(wire[s])
	}
	return c, nil
}
