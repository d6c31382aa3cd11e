package net

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	stdnet "net"
	"sync"
	"time"

	"github.com/arbor-sync/arbor/diff"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// BaseRef is the client ref holding the last server root it agreed on.
const BaseRef = "base"

// Client metadata names (tree.Store.Meta).
const (
	metaFingerprint = "net/server-fingerprint"
	metaClientID    = "net/client-id"
	// MetaScope holds a partial replica's scope (see ClientOptions.Scope),
	// encoded as on the wire; absent means every key.
	MetaScope = "net/scope"
)

// ClientOptions configure Sync, Root, Watch and Follow.
type ClientOptions struct {
	// Server is the server's UDP address, host:port. It is the same as a
	// Servers list of one.
	Server string
	// Servers lists the servers of one cluster, host:port each: servers
	// that serve the same dataset and present one certificate (one
	// Fingerprint pins them all). They are tried in order; with Server
	// also set, Server comes first, and an address named twice is tried
	// once. When connecting fails or the connection dies (the server was
	// killed, drained or stopped answering), Sync, Root and Watch fail over
	// to the next server, wrapping around the list once (at most twice its
	// length in connections); a sync resumes where it stopped, fetching
	// nothing again (SyncResult.Server and Failovers say what happened).
	// Refusals (a token, a certificate, a protocol error, ErrNoSyncHistory,
	// ErrUnpushable) and cancellation end it at once. With one server
	// nothing is retried (Follow retries with backoff).
	Servers []string
	// Token authenticates the client.
	Token string
	// Fingerprint pins the server certificate (hex SHA-256 of its DER, as
	// the server prints it; colons allowed). When empty, Sync uses the
	// fingerprint it stored on a previous sync.
	Fingerprint string
	// TrustOnFirstUse accepts an unknown server and, in Sync, stores its
	// fingerprint for later syncs.
	TrustOnFirstUse bool
	// CAFile verifies the server certificate against these CAs instead of
	// a pin.
	CAFile string
	// Progress, if set, is called from the syncing goroutine as work advances.
	Progress func(Progress)
	// Logger receives sync events. Default: discard.
	Logger *slog.Logger
	// IOTimeout bounds every frame read and write. Default 30s.
	IOTimeout time.Duration
	// DialTimeout bounds the wait for a server's first answer when
	// connecting (the QUIC handshake's idle timeout), so a dead server
	// costs a failover at most this long. Default: IOTimeout with one
	// server; with several, the smaller of IOTimeout and 5s.
	DialTimeout time.Duration
	// PeerTimeout is how long a connection may go without a packet from
	// the server before the server counts as gone (QUIC's idle timeout;
	// keep-alives every third of it mean a live server, however busy,
	// never trips it). A server killed mid-sync, which closes nothing,
	// costs a failover about this long. Default: 2×IOTimeout with one
	// server; with several, the smaller of IOTimeout and 5s.
	PeerTimeout time.Duration
	// MaxFrame is the largest frame accepted or sent. Default 16 MiB.
	MaxFrame int
	// Parallel is how many node requests a walk keeps in flight. Default 2.
	Parallel int
	// BatchNodes is how many nodes one walk request asks for. Default 4096.
	BatchNodes int
	// ForceWalk makes Sync ignore a retained base and walk the server's
	// tree (for a suspicious client, and for tests and benchmarks).
	ForceWalk bool
	// Scope makes the store a partial replica of the keys in it. The zero
	// Scope means the scope stored by the last sync (every key if none).
	// The first sync stores it; a later sync with a wider scope fetches
	// only the added part. The scope actually synced is this one
	// intersected with the token's read scope (which the server sends), so
	// a shrunk read scope shrinks the replica. A partial replica always
	// walks: it fetches only nodes whose key interval overlaps its scope
	// and holds the server's tree pruned to it, which tree.Store.VerifyScope checks.
	// Narrowing the scope (here or by the server's read scope) first
	// pushes the local changes the replica holds, in the old scope.
	Scope scope.Scope
	// Adopt and Merge say what the sync of a store that holds records but
	// shares no sync history with the server (no base: a local import, a
	// lost or restored replica) does with them. Without either, such a
	// sync fails with ErrNoSyncHistory and changes nothing. Adopt takes the
	// server's state and reports every local record it drops or replaces
	// in SyncResult.Discarded (the repair of a lost or suspicious replica).
	// Merge pushes the local records as new writes: the server's value
	// wins for keys it holds, and keys it deleted since come back.
	Adopt, Merge bool
	// NoSessionResumption makes Sync neither keep nor use the TLS session
	// ticket its store holds for the server (see SyncResult.Resumed).
	NoSessionResumption bool
	// DiscardUnpushable drops, and reports in SyncResult.Discarded, the
	// local changes the token may not write (its write scope) instead of
	// failing the sync with ErrUnpushable.
	DiscardUnpushable bool
}

// defaults fills in the options left zero; servers is how many servers
// the options name.
func (o *ClientOptions) defaults(servers int) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.IOTimeout <= 0 {
		o.IOTimeout = 30 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = o.IOTimeout
		if servers > 1 {
			o.DialTimeout = min(o.IOTimeout, 5*time.Second)
		}
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = 2 * o.IOTimeout
		if servers > 1 {
			o.PeerTimeout = min(o.IOTimeout, 5*time.Second)
		}
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if o.BatchNodes <= 0 {
		o.BatchNodes = 4096
	}
	if o.BatchNodes > maxRequestHashes {
		o.BatchNodes = maxRequestHashes
	}
}

// Progress reports how far a sync has come. After a failover, Phase starts
// again at "connect" with the next Server, Records and Total count that
// attempt's work, and Nodes and the bytes count every attempt's.
type Progress struct {
	Phase         string // "connect", "push", "pull", "walk", "commit", "done"
	Records       int64  // records pushed, pulled, or (walk) covered so far
	Total         int64  // walk: records under the server's root, so Records/Total is exact; else 0
	Nodes         int64  // nodes fetched so far
	BytesReceived int64
	BytesSent     int64
	Server        string // the server being synced with
}

// Overridden is a local change the server rejected because the key's
// server value had changed since the client's base: the server's value won.
type Overridden struct {
	Key    []byte
	Local  *[]byte // the client's value; nil: the client deleted the key
	Server *[]byte // the value the client now holds; nil: absent
	// Reason is set when the server's write validation (ServerOptions.Validate)
	// rejected the change: its message. Empty for a compare-and-set loss.
	Reason string
}

// SyncResult describes a completed sync.
type SyncResult struct {
	ServerRoot node.Hash    // the server's root the client synced to
	Root       node.Hash    // the client's new base root (equal to ServerRoot)
	ClientID   string       // the id the server knows the client by
	Path       string       // "retained", "walk" or "none"
	Pulled     int          // records received from the server (walk: records that differ from the old base)
	Pushed     int          // local changes sent
	Accepted   int          // local changes the server accepted
	Overridden []Overridden // local changes the server's value overrode
	Discarded  []Overridden // local changes dropped on request (Adopt, DiscardUnpushable), with the reason
	Scope      scope.Scope  // the scope synced (scope.All for a full replica)
	// BytesSent, BytesReceived (at the QUIC stream level), RoundTrips
	// (request/response exchanges, handshakes included), NodesFetched and
	// BlobsFetched count every attempt of the sync, the failed-over ones
	// included.
	BytesSent     int64
	BytesReceived int64
	RoundTrips    int
	Resumed       bool // the TLS session was resumed (no certificate sent)
	// EarlyData: the Hello went as 0-RTT data on the resumed session and
	// the server took it, so its answer came one round trip after the
	// first packet instead of two.
	EarlyData    bool
	NodesFetched int
	BlobsFetched int
	Duration     time.Duration
	// Server is the server that completed the sync (one of
	// ClientOptions.Servers), and Failovers how many times the sync moved
	// to the next server after a connection failed or died.
	Server    string
	Failovers int
}

// client is one connection to a server.
type client struct {
	opts ClientOptions
	qc   *quic.Conn
	peer string
	c    counters
	log  *slog.Logger
	w    welcome
	fp   string

	resumed bool // the TLS session was resumed from a ticket
	early   bool // the server took the Hello as 0-RTT data
	ec      *earlyConn
}

// dial connects and performs the Hello exchange.
// sessions, if set, resumes and keeps TLS sessions (storeSessionCache).
func dial(ctx context.Context, opts ClientOptions, pin string, h hello, sessions tls.ClientSessionCache) (*client, error) {
	host, _, err := stdnet.SplitHostPort(opts.Server)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", opts.Server, err)
	}
	cl := &client{opts: opts, peer: "server " + opts.Server, log: opts.Logger}
	tconf, err := clientTLS(host, pin, opts.CAFile, opts.TrustOnFirstUse)
	if err != nil {
		return nil, err
	}
	tconf.ClientSessionCache = sessions
	var pinMu sync.Mutex
	var pinErr error
	if vc := tconf.VerifyConnection; vc != nil {
		tconf.VerifyConnection = func(cs tls.ConnectionState) error {
			pinMu.Lock()
			defer pinMu.Unlock()
			pinErr = vc(cs)
			return pinErr
		}
	}
	early := false
	if sessions != nil {
		if cs, ok := sessions.Get(host); ok {
			if _, ss, err := cs.ResumptionState(); err == nil && ss != nil {
				early = ss.EarlyData
			}
			// A resumed session's keys come from the ticket, which came
			// from a full handshake with a post-quantum hybrid key share,
			// so X25519 alone adds forward secrecy without weakening it:
			// and without the hybrid share (1.2 KB) the ClientHello, with
			// the Hello in 0-RTT behind it, fits one datagram.
			tconf.CurvePreferences = []tls.CurveID{tls.X25519}
		}
	}
	qconf := &quic.Config{
		HandshakeIdleTimeout: cmp.Or(opts.DialTimeout, opts.IOTimeout),
		MaxIdleTimeout:       cmp.Or(opts.PeerTimeout, 2*opts.IOTimeout),
		KeepAlivePeriod:      min(opts.IOTimeout, cmp.Or(opts.PeerTimeout, 2*opts.IOTimeout)) / 3,
		// Walk responses are megabytes on fresh streams: start with large
		// windows instead of growing each stream's from 512 KiB.
		InitialStreamReceiveWindow:     8 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 32 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		MaxIncomingStreams:             -1,
		MaxIncomingUniStreams:          -1,
		// Datagrams carrying Initial packets are padded to this size:
		// QUIC's floor rather than quic-go's 1280 (path MTU discovery
		// still grows later packets).
		InitialPacketSize: 1200,
	}
	var qc *quic.Conn
	if early {
		// With a ticket that allows early data the Hello goes out in
		// 0-RTT, so a sync's first answer comes back one round trip after
		// the first packet.
		var ec *earlyConn
		if ec, err = earlyDial(ctx, opts.Server, tconf, qconf); err == nil {
			qc, cl.ec = ec.qc, ec
		}
	} else {
		qc, err = quic.DialAddr(ctx, opts.Server, tconf, qconf)
	}
	fail := func(err error) error {
		pinMu.Lock()
		perr := pinErr
		pinMu.Unlock()
		if perr != nil {
			return perr
		}
		var te *quic.TransportError
		if errors.As(err, &te) && te.ErrorCode == quic.TransportErrorCode(0x100+120) {
			// TLS alert no_application_protocol: no version in common.
			return fmt.Errorf("connect to %s: %w: the server speaks none of %s, %s: upgrade this client or the server", cl.peer, ErrVersion, ALPN, ALPNv1)
		}
		return fmt.Errorf("connect to %s: %w", cl.peer, err)
	}
	if err != nil {
		return nil, fail(err)
	}
	h.Hash = cmp.Or(h.Hash, node.XXH3)
	cl.qc = qc
	err = cl.hello(ctx, h)
	if errors.Is(err, quic.Err0RTTRejected) {
		// The server did not take the early data (a restarted server no
		// longer knows the ticket): the handshake completed without it;
		// say Hello again on the connection it left.
		if qc, err = qc.NextConnection(ctx); err != nil {
			return nil, fail(err)
		}
		cl.qc = qc
		err = cl.hello(ctx, h)
	}
	if err != nil {
		cl.close()
		var ae *quic.ApplicationError
		var te *quic.TransportError
		if !errors.As(err, &ae) && errors.As(err, &te) {
			return nil, fail(err) // the TLS handshake failed under the Hello
		}
		if ae := (alpnError{}); errors.As(err, &ae) {
			return nil, ae.error
		}
		return nil, fmt.Errorf("hello: %w", err)
	}
	return cl, nil
}

// alpnError is a server that negotiated an older protocol.
type alpnError struct{ error }

func (e alpnError) Unwrap() error { return e.error }

func (cl *client) checkALPN() error {
	if p := cl.qc.ConnectionState().TLS.NegotiatedProtocol; p != ALPN {
		cl.qc.CloseWithError(quic.ApplicationErrorCode(codeVersion), "this client speaks "+ALPN)
		return alpnError{fmt.Errorf("connect to %s: %w: the server speaks %s, an older protocol than this client's %s: upgrade the server", cl.peer, ErrVersion, p, ALPN)}
	}
	return nil
}

// hello sends h on a new stream and reads the server's Welcome. On an
// early connection the Hello may travel as 0-RTT data; nothing of the
// answer is believed before the TLS handshake completes (the pin is
// checked there, resumed or not).
func (cl *client) hello(ctx context.Context, h hello) error {
	select {
	case <-cl.qc.HandshakeComplete():
		// No 0-RTT: the protocol is known before the Hello goes out.
		if err := cl.checkALPN(); err != nil {
			return err
		}
	default:
	}
	ex, err := cl.open(ctx)
	if err == nil {
		err = ex.send(msgHello, h.encode())
	}
	if err == nil {
		err = ex.closeSend()
	}
	if cl.ec != nil {
		// The stream is open (see earlyDial) and the Hello queued before
		// any answer can give 1-RTT keys: it leaves as 0-RTT data.
		cl.ec.gate.open()
	}
	var f frame
	if err == nil {
		f, err = ex.recv(msgWelcome)
	}
	if err == nil {
		select {
		case <-cl.qc.HandshakeComplete():
		case <-cl.qc.Context().Done():
			err = context.Cause(cl.qc.Context())
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	if err := cl.checkALPN(); err != nil {
		return err
	}
	cs := cl.qc.ConnectionState()
	cl.resumed, cl.early = cs.TLS.DidResume, cs.Used0RTT
	if pc := cs.TLS.PeerCertificates; len(pc) > 0 {
		cl.fp = Fingerprint(pc[0].Raw)
	}
	cl.w, err = decodeWelcome(f.Payload)
	cl.w.RootNode = append([]byte(nil), cl.w.RootNode...)
	switch {
	case err != nil:
	case !cl.w.Hash.Valid():
		err = fmt.Errorf("%w: the server's store uses hash algorithm %d, unknown to this client: upgrade it", ErrVersion, cl.w.Hash)
	case h.Flags&(flagAudit|flagFresh) == 0 && cl.w.Hash != h.Hash:
		err = fmt.Errorf("%w: the server's store hashes with %s, this replica with %s (a replica takes its server's hash: clone it afresh)", ErrConfigMismatch, cl.w.Hash, h.Hash)
	}
	if err == nil {
		err = ex.expectEOF()
	}
	return err
}

func (cl *client) close() {
	cl.qc.CloseWithError(0, "")
	if cl.ec != nil {
		cl.ec.close()
	}
}

// open starts an exchange on a new stream.
func (cl *client) open(ctx context.Context) (*exchange, error) {
	st, err := cl.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: open stream: %w", cl.peer, connErr(cl.peer, err))
	}
	cl.c.exchanges.Add(1)
	return newExchange(st, &cl.c, cl.opts.IOTimeout, cl.opts.MaxFrame, cl.peer), nil
}

// request opens an exchange and sends it one request frame, ending the
// client's side: the fetches' exchanges are a request and its response.
func (cl *client) request(ctx context.Context, typ byte, payload []byte) (*exchange, error) {
	ex, err := cl.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := ex.send(typ, payload); err != nil {
		return nil, err
	}
	if err := ex.closeSend(); err != nil {
		return nil, err
	}
	return ex, nil
}

// Root connects to the server and returns its current root: the integrity
// audit. It needs a pin, a CA file or TrustOnFirstUse. With several
// servers it asks the first that answers (see ClientOptions.Servers).
func Root(ctx context.Context, opts ClientOptions) (node.Hash, error) {
	h, _, err := RootFrom(ctx, opts)
	return h, err
}

// RootFrom is Root, also naming the server that answered.
func RootFrom(ctx context.Context, opts ClientOptions) (root node.Hash, server string, err error) {
	servers, err := serverList(opts)
	if err != nil {
		return node.Hash{}, "", err
	}
	opts.defaults(len(servers))
	server, _, err = tryServers(ctx, &opts, servers, "root", func(o ClientOptions) error {
		cl, err := dial(ctx, o, o.Fingerprint, hello{Token: o.Token, Flags: flagAudit}, nil)
		if err != nil {
			return err
		}
		defer cl.close()
		root = cl.w.Root
		return nil
	})
	if err != nil {
		return node.Hash{}, "", err
	}
	return root, server, nil
}

// Sync brings store up to date with the server in both directions. It
// pushes the local changes since the last sync (ref "base" to ref "head"),
// with the server's value winning every conflict; pulls everything else
// that changed on the server; and leaves "base" and "head" at the server's
// root (plus any writes made to "head" while Sync ran, which stay local
// changes for the next sync). An interrupted Sync leaves the store at its
// old state, keeping the nodes already fetched for the next attempt.
//
// With several servers (ClientOptions.Servers), a sync whose server cannot
// be reached or dies midway continues on the next one: it resumes with the
// nodes already fetched and re-sends a push whose reply was lost.
//
// If the recomputed root does not match the server's, Sync repairs the
// store with a walk and returns the result with an error wrapping
// ErrRootMismatch.
func Sync(ctx context.Context, store *tree.Store, opts ClientOptions) (*SyncResult, error) {
	servers, err := serverList(opts)
	if err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	opts.defaults(len(servers))
	start := time.Now()
	var (
		last  *syncer
		prior SyncResult // the wire counts of the attempts before last
	)
	server, failovers, err := tryServers(ctx, &opts, servers, "sync", func(o ClientOptions) error {
		if last != nil {
			prior.BytesSent += last.res.BytesSent
			prior.BytesReceived += last.res.BytesReceived
			prior.RoundTrips += last.res.RoundTrips
			prior.NodesFetched += last.res.NodesFetched
			prior.BlobsFetched += last.res.BlobsFetched
		}
		sy, err := syncOnce(ctx, store, o, prior)
		last = sy
		if cl := sy.cl; cl != nil && cl.fp != "" && opts.Fingerprint == "" && opts.CAFile == "" {
			// Trusted on first use (or by the stored pin): the next server
			// of the cluster must present the same certificate.
			opts.Fingerprint = cl.fp
		}
		return err
	})
	res := last.res
	res.Server, res.Failovers = server, failovers
	res.BytesSent += prior.BytesSent
	res.BytesReceived += prior.BytesReceived
	res.RoundTrips += prior.RoundTrips
	res.NodesFetched += prior.NodesFetched
	res.BlobsFetched += prior.BlobsFetched
	res.Duration = time.Since(start)
	if err != nil && !errors.Is(err, ErrRootMismatch) {
		return nil, err
	}
	last.progress("done")
	return res, err
}

// syncOnce is one attempt of Sync, against o.Server. prior holds the wire
// counts of the attempts before it, for Progress.
func syncOnce(ctx context.Context, store *tree.Store, o ClientOptions, prior SyncResult) (*syncer, error) {
	sy := &syncer{store: store, opts: o, res: &SyncResult{Path: "none", Server: o.Server}, log: o.Logger, prior: prior}
	err := sy.run(ctx)
	if err == nil && sy.hasBase && sy.sc.Ranges() != nil && !sy.sc.Covers(sy.oldSc) {
		// The scope shrank (the token's read scope did, or the caller asked
		// for less): drop the records the replica no longer holds.
		// Only while head is where the commit put it: a write that landed
		// since (outside the new scope, through a stale check of it) must
		// not lose its nodes; the next sync prunes instead.
		if _, gerr := store.GCScopeAt(ctx, sy.sc, HeadRef, sy.newHead); errors.Is(gerr, tree.ErrRefMoved) {
			sy.log.Warn("arbor sync: head moved after the commit; records outside the shrunk scope are dropped by a later sync", "scope", sy.sc.String())
		} else if gerr != nil {
			err = fmt.Errorf("drop records outside the shrunk scope %s: %w", sy.sc, gerr)
		}
	}
	if sy.cl != nil {
		sy.res.BytesSent = sy.cl.c.sent.Load()
		sy.res.BytesReceived = sy.cl.c.recv.Load()
		sy.res.RoundTrips = int(sy.cl.c.exchanges.Load())
		sy.cl.close()
	}
	if err != nil && !errors.Is(err, ErrRootMismatch) {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			// Cancellation surfaces as a closed connection: say so.
			return sy, fmt.Errorf("sync with %s: %w (%v)", o.Server, cerr, err)
		}
		return sy, fmt.Errorf("sync with %s: %w", o.Server, err)
	}
	return sy, err
}

// syncer holds the state of one Sync.
type syncer struct {
	store *tree.Store
	opts  ClientOptions
	log   *slog.Logger
	cl    *client
	res   *SyncResult
	prior SyncResult // the wire counts of the sync's earlier attempts (failovers)

	base    node.Hash // old base (EmptyRoot if none)
	hasBase bool
	head0   node.Hash // head when the sync started
	hadHead bool

	records, nodes, total int64

	sc      scope.Scope // the scope being synced (All: a full replica)
	oldSc   scope.Scope // the scope the store held before this sync
	pushSc  scope.Scope // where local changes are pushed from: oldSc, or All without a base
	adopt   bool        // a store without a base takes the server's state
	newHead node.Hash   // head as the commit left it
	added   scope.Scope // sc minus oldSc: fetched even below held nodes
	partial bool
}

// StoredScope returns the scope a store replicates: the one its last sync
// stored, or scope.All.
func StoredScope(s *tree.Store) (scope.Scope, error) {
	b, err := s.Meta(MetaScope)
	if errors.Is(err, tree.ErrNotFound) || (err == nil && len(b) == 0) {
		return scope.All, nil
	}
	if err != nil {
		return scope.Scope{}, err
	}
	d := newDec(msgWelcome, 0, b)
	sc := decodeScope(d)
	if err := d.done(); err != nil {
		return scope.Scope{}, fmt.Errorf("store %s: scope metadata: %w", s.Dir(), err)
	}
	return sc, nil
}

// complement returns the keys outside s.
func complement(s scope.Scope) scope.Scope {
	var out []tree.Range
	var prev []byte
	first := true
	for _, r := range s.Ranges() {
		if r.Start != nil && (first || prev != nil) {
			out = append(out, tree.Range{Start: prev, End: r.Start})
		}
		first = false
		prev = r.End
		if prev == nil {
			return scope.New(out...)
		}
	}
	if first {
		return scope.All
	}
	return scope.New(append(out, tree.Range{Start: prev})...)
}

// diff yields the changes from→to within the synced scope.
func (sy *syncer) diff(ctx context.Context, from, to node.Hash) iter.Seq2[diffChange, error] {
	return diffScope(ctx, sy.store, from, to, sy.sc)
}

// diffScope yields the changes from→to in s restricted to sc, in key order.
func diffScope(ctx context.Context, s *tree.Store, from, to node.Hash, sc scope.Scope) iter.Seq2[diffChange, error] {
	if sc.IsAll() {
		return diffTrees(ctx, s, from, to)
	}
	return func(yield func(diffChange, error) bool) {
		for _, r := range sc.Ranges() {
			for c, err := range diff.Diff(ctx, s, from, s, to, diff.Options{Range: r}) {
				if !yield(c, err) || err != nil {
					return
				}
			}
		}
	}
}

func (sy *syncer) progress(phase string) {
	if sy.opts.Progress == nil {
		return
	}
	p := Progress{Phase: phase, Records: sy.records, Total: sy.total, Nodes: sy.nodes + int64(sy.prior.NodesFetched),
		BytesReceived: sy.prior.BytesReceived, BytesSent: sy.prior.BytesSent, Server: sy.opts.Server}
	if sy.cl != nil {
		p.BytesReceived += sy.cl.c.recv.Load()
		p.BytesSent += sy.cl.c.sent.Load()
	}
	sy.opts.Progress(p)
}

func (sy *syncer) run(ctx context.Context) error {
	s := sy.store
	// Fetched nodes are committed before any ref reaches them: keep a
	// concurrent garbage collection from deleting them meanwhile.
	release := s.PreventGC()
	defer release()
	var err error
	sy.base, sy.hasBase, err = s.Ref(BaseRef)
	if err != nil {
		return err
	}
	if !sy.hasBase {
		sy.base = sy.store.EmptyRoot()
	}
	sy.head0, sy.hadHead, err = s.Ref(HeadRef)
	if err != nil {
		return err
	}
	if !sy.hadHead {
		sy.head0 = sy.store.EmptyRoot()
	}
	local := sy.head0 != sy.base
	if !sy.hasBase && local {
		switch {
		case sy.opts.Adopt && sy.opts.Merge:
			return errors.New("Adopt and Merge both set: choose one")
		case sy.opts.Merge:
		default:
			// Adopt, or find out what adopting would discard and stop.
			sy.adopt, local = true, false
		}
	}
	if sy.oldSc, err = StoredScope(s); err != nil {
		return err
	}
	if !sy.hasBase {
		sy.oldSc = scope.Scope{}
	}
	want := sy.opts.Scope
	if want.Ranges() == nil {
		want = sy.oldSc
		if !sy.hasBase {
			want = scope.All
		}
	}

	pin := sy.opts.Fingerprint
	if pin == "" && sy.opts.CAFile == "" {
		if b, err := s.Meta(metaFingerprint); err == nil {
			pin = string(b)
		}
	}
	h := hello{Token: sy.opts.Token, Config: s.Config(), Hash: s.Hash()}
	if sy.hasBase {
		h.Base = sy.base
	}
	if sy.opts.ForceWalk || !want.IsAll() {
		h.Flags |= flagWalk
	}
	if local {
		h.Flags |= flagPush
	}
	if !sy.hasBase && !sy.hadHead {
		h.Flags |= flagFresh
	}
	sy.progress("connect")
	var sessions tls.ClientSessionCache
	if pin != "" && !sy.opts.NoSessionResumption {
		// Resume only under a pin: a resumed session shows the certificate
		// it was made with, which the pin checks again.
		sessions = &storeSessionCache{store: s, pin: normFingerprint(pin)}
	}
	cl, err := dial(ctx, sy.opts, pin, h, sessions)
	if err != nil {
		return err
	}
	sy.cl = cl
	sy.res.Resumed, sy.res.EarlyData = cl.resumed, cl.early
	stop := watch(ctx, cl.qc)
	defer stop()
	w := cl.w
	sy.res.ClientID = w.ClientID
	sy.res.ServerRoot = w.Root
	if h.Flags&flagFresh != 0 && (w.Hash != s.Hash() || w.Config.WithDefaults() != s.Config()) {
		// A replica's first sync: an empty store takes its server's hash
		// and node sizes (Reinit refuses a store that holds anything).
		if err := s.Reinit(w.Config, w.Hash); err != nil {
			return fmt.Errorf("server %s hashes with %s (%+v): %w", cl.peer, w.Hash, w.Config.WithDefaults(), err)
		}
		sy.base, sy.head0 = s.EmptyRoot(), s.EmptyRoot()
	}
	if w.Hash != s.Hash() {
		return fmt.Errorf("%w: the server's store hashes with %s, replica %s with %s", ErrConfigMismatch, w.Hash, s.Dir(), s.Hash())
	}
	if w.Config.WithDefaults() != s.Config() {
		return fmt.Errorf("%w: server %+v, client store %s %+v", ErrConfigMismatch, w.Config, s.Dir(), s.Config())
	}
	sy.sc = want.Intersect(w.Read)
	if sy.sc.IsEmpty() {
		return fmt.Errorf("%w: client %s: scope %s and read scope %s have no key in common", ErrForbiddenScope, w.ClientID, want, w.Read)
	}
	sy.partial = !sy.sc.IsAll()
	// Local changes are pushed from all the store holds, not only from the
	// scope being synced, so a narrowed scope loses no unpushed write.
	sy.pushSc = sy.oldSc
	if !sy.hasBase {
		sy.pushSc = scope.All
	}
	sy.added = sy.sc.Intersect(complement(sy.oldSc))
	if !sy.hasBase {
		sy.added = scope.Scope{}
	}
	sy.res.Scope = sy.sc
	if w.Root == sy.base && !local && sy.hasBase && sy.sc.Equal(sy.oldSc) {
		// Equal roots and no local changes: done in one round trip.
		sy.res.Root = sy.base
		return sy.rememberServer(ctx)
	}

	target := w.Root
	var pushed *pushOutcome
	if local {
		if err := sy.checkWritable(ctx, w.Write); err != nil {
			return err
		}
	}
	if local {
		sy.progress("push")
		pushed, err = sy.push(ctx)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		target = pushed.root
	}
	sy.res.ServerRoot = target

	var newBase node.Hash
	switch {
	case target == sy.base && sy.hasBase && sy.added.IsEmpty():
		newBase = sy.base
	case pushed != nil && target == sy.head0 && sy.added.IsEmpty():
		// The server's tree after the push is the local head: nobody else
		// wrote since the base and every change was accepted. The head is
		// the new base; there is nothing to pull or re-apply.
		newBase = sy.head0
	case w.Retained && sy.hasBase && !sy.opts.ForceWalk && !sy.partial:
		sy.res.Path = "retained"
		sy.progress("pull")
		newBase, err = sy.pullChanges(ctx, target, pushed)
		if err != nil && errors.Is(err, node.ErrCorrupt) && ctx.Err() == nil {
			// The local base is damaged: the walk below repairs what it can
			// reach, and the user hears of it.
			sy.log.Error("arbor sync: local base is corrupt, walking to repair", "err", err)
			newBase, err = node.Hash{}, nil
		}
		if err != nil {
			return fmt.Errorf("pull changes: %w", err)
		}
	default:
		sy.res.Path = "walk"
		sy.progress("walk")
		if err := sy.walk(ctx, target); err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		newBase = target
	}
	var mismatch error
	if newBase != target {
		mismatch = fmt.Errorf("%w: recomputed root %s, server root %s; repaired by a walk", ErrRootMismatch, newBase, target)
		sy.log.Error("arbor sync: root mismatch, walking to repair", "local", newBase.String(), "server", target.String())
		sy.res.Path = "walk"
		if err := sy.walk(ctx, target); err != nil {
			return fmt.Errorf("%w; repair walk failed: %w", mismatch, err)
		}
		newBase = target
	}
	if sy.res.Path == "walk" && sy.hasBase && mismatch == nil {
		// Count what the walk changed; a corrupt old base only loses the count.
		n, err := countChanges(diffScope(ctx, s, sy.base, target, sy.sc.Intersect(sy.oldSc)))
		if err == nil && !sy.added.IsEmpty() {
			// A widened scope: the added part's records are all new.
			var m int
			m, err = countChanges(diffScope(ctx, s, sy.store.EmptyRoot(), target, sy.added))
			n += m
		}
		if err != nil {
			sy.log.Warn("arbor sync: cannot count changes against the old base", "err", err)
		}
		sy.res.Pulled = n
	} else if sy.res.Path == "walk" && mismatch == nil && !sy.partial {
		c, err := s.Count(ctx, target)
		if err != nil {
			return err
		}
		sy.res.Pulled = int(c)
	} else if sy.res.Path == "walk" && mismatch == nil {
		n, err := countChanges(sy.diff(ctx, sy.store.EmptyRoot(), target))
		if err != nil {
			return err
		}
		sy.res.Pulled = n
	}
	if sy.adopt && !sy.opts.Adopt {
		return sy.noHistory(ctx, newBase)
	}
	sy.progress("commit")
	if err := sy.commit(ctx, newBase); err != nil {
		return err
	}
	sy.res.Root = newBase
	if pushed != nil {
		if err := sy.reportOverridden(ctx, pushed, newBase); err != nil {
			return err
		}
	}
	if sy.adopt {
		if err := sy.reportAdopted(ctx, newBase); err != nil {
			return err
		}
	}
	return mismatch
}

// noHistory fails the sync of a store with records and no base, for which
// the caller chose neither Adopt nor Merge, saying what each would do. The
// server's tree was fetched (the next sync reuses it); no ref moved.
func (sy *syncer) noHistory(ctx context.Context, root node.Hash) error {
	var differ, only int
	for c, err := range sy.adoptChanges(ctx, root) {
		if err != nil {
			return err
		}
		switch {
		case c.Old == nil:
		case c.New == nil:
			only++
		default:
			differ++
		}
	}
	return fmt.Errorf("%w: store %s has never synced with this server, and %d of its records differ from the server's "+
		"(%d hold other values, %d the server lacks): adopt the server's state (Adopt, arbor sync --adopt: "+
		"those records are dropped and listed) or merge (Merge, --merge: push every local record as a new write; "+
		"the server's value wins where it has one, and records it deleted come back)",
		ErrNoSyncHistory, sy.store.Dir(), differ+only, differ, only)
}

// adoptChanges yields what adopting the server's root changes in the local
// head: the differences within the synced scope, then every local record
// outside it (a partial replica keeps nothing there).
func (sy *syncer) adoptChanges(ctx context.Context, root node.Hash) iter.Seq2[diffChange, error] {
	return func(yield func(diffChange, error) bool) {
		for c, err := range diffScope(ctx, sy.store, sy.head0, root, sy.sc) {
			if !yield(c, err) || err != nil {
				return
			}
		}
		if sy.sc.IsAll() {
			return
		}
		for c, err := range diffScope(ctx, sy.store, sy.head0, sy.store.EmptyRoot(), complement(sy.sc)) {
			if !yield(c, err) || err != nil {
				return
			}
		}
	}
}

// checkWritable finds the local changes outside the token's write scope,
// which the server would refuse with the whole push: it fails naming them,
// or with DiscardUnpushable leaves them out of the push and reports them.
func (sy *syncer) checkWritable(ctx context.Context, write scope.Scope) error {
	if write.IsAll() {
		return nil
	}
	var bad [][]byte
	for c, err := range diffScope(ctx, sy.store, sy.base, sy.head0, sy.pushSc.Intersect(complement(write))) {
		if err != nil {
			return err
		}
		bad = append(bad, append([]byte(nil), c.Key...))
	}
	if len(bad) == 0 {
		return nil
	}
	if !sy.opts.DiscardUnpushable {
		names := ""
		for i, k := range bad {
			if i == 5 {
				names += fmt.Sprintf(" and %d more", len(bad)-5)
				break
			}
			names += fmt.Sprintf(" %q", k)
		}
		return fmt.Errorf("%w: %d local changes lie outside the token's write scope %s:%s; they stay local "+
			"(DiscardUnpushable, arbor sync --discard-unpushable, drops them)", ErrUnpushable, len(bad), write, names)
	}
	sy.pushSc = sy.pushSc.Intersect(write)
	for _, k := range bad {
		o := Overridden{Key: k, Reason: "outside the token's write scope: discarded"}
		var err error
		if o.Local, err = sy.readOpt(ctx, sy.head0, k); err != nil {
			return err
		}
		sy.res.Discarded = append(sy.res.Discarded, o)
	}
	return nil
}

// reportAdopted lists, for a store that adopted the server's state, every
// local record the server's state dropped or replaced.
func (sy *syncer) reportAdopted(ctx context.Context, root node.Hash) error {
	for c, err := range sy.adoptChanges(ctx, root) {
		if err != nil {
			return err
		}
		if c.Old == nil {
			continue // a record only the server has: nothing local was lost
		}
		o := Overridden{Key: append([]byte(nil), c.Key...), Reason: "no sync history: the server's state adopted"}
		var err error
		if o.Local, err = sy.readOpt(ctx, sy.head0, c.Key); err != nil {
			return err
		}
		if c.New != nil {
			if o.Server, err = sy.readOpt(ctx, root, c.Key); err != nil {
				return err
			}
		}
		sy.res.Discarded = append(sy.res.Discarded, o)
	}
	return nil
}

// rememberServer stores the server's fingerprint and the client id.
func (sy *syncer) rememberServer(ctx context.Context) error {
	b, err := sy.store.NewBatch()
	if err != nil {
		return err
	}
	sy.setServerMeta(b)
	return b.Commit(ctx)
}

func (sy *syncer) setServerMeta(b *tree.Batch) {
	if sy.cl.fp != "" && sy.opts.CAFile == "" {
		_ = b.SetMeta(metaFingerprint, []byte(sy.cl.fp))
	}
	_ = b.SetMeta(metaClientID, []byte(sy.cl.w.ClientID))
	if sy.sc.Ranges() != nil {
		_ = b.SetMeta(MetaScope, appendScope(nil, sy.sc))
	}
}

// commit moves base to newBase and head to newBase plus any writes made to
// head since the sync started.
func (sy *syncer) commit(ctx context.Context, newBase node.Hash) error {
	s := sy.store
	for {
		cur, had, err := s.Ref(HeadRef)
		if err != nil {
			return err
		}
		if !had {
			cur = sy.store.EmptyRoot()
		}
		b, err := s.NewBatch()
		if err != nil {
			return err
		}
		newHead := newBase
		if cur != sy.head0 && !sy.sc.IsAll() {
			// A write made during the sync outside the new scope cannot be
			// kept in the replica: fail and keep it (the next sync pushes it).
			for c, err := range diffScope(ctx, s, sy.head0, cur, complement(sy.sc)) {
				b.Discard()
				if err != nil {
					return err
				}
				return fmt.Errorf("%w: key %q was written during the sync, outside the new scope %s; it stays local: sync again", errWrittenDuringSync, c.Key, sy.sc)
			}
		}
		if cur != sy.head0 {
			// Writes landed during the sync: replay them on the new state.
			newHead, err = replay(ctx, s, b, sy.diff(ctx, sy.head0, cur), newBase)
			if err != nil {
				b.Discard()
				return fmt.Errorf("replay local writes made during sync: %w", err)
			}
		}
		b.ExpectRef(HeadRef, cur, had)
		b.SetRef(HeadRef, newHead)
		sy.newHead = newHead
		b.SetRef(BaseRef, newBase)
		sy.setServerMeta(b)
		err = b.Commit(ctx)
		if errors.Is(err, tree.ErrRefMoved) {
			continue
		}
		return err
	}
}

// replay applies changes onto root in b.
func replay(ctx context.Context, s *tree.Store, b *tree.Batch, changes iter.Seq2[diffChange, error], root node.Hash) (node.Hash, error) {
	var edits []tree.StoredEdit
	var err error
	for c, derr := range changes {
		if derr != nil {
			return root, derr
		}
		e := tree.StoredEdit{Key: append([]byte(nil), c.Key...)}
		if c.New != nil {
			v := cloneValue(*c.New)
			e.Value = &v
		}
		edits = append(edits, e)
		if len(edits) == applyBatch {
			if root, err = b.ApplyValues(ctx, root, edits); err != nil {
				return root, err
			}
			edits = edits[:0]
		}
	}
	if len(edits) > 0 {
		root, err = b.ApplyValues(ctx, root, edits)
	}
	return root, err
}

// applyBatch is how many edits are applied at a time.
const applyBatch = 16384

func cloneValue(v node.Value) node.Value {
	v.Inline = append([]byte(nil), v.Inline...)
	return v
}

func countChanges(changes iter.Seq2[diffChange, error]) (int, error) {
	n := 0
	for _, err := range changes {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// alg is the session's hash algorithm: the server's, which the handshake
// checked equals the replica's.
func (sy *syncer) alg() node.Alg {
	if sy.cl != nil && sy.cl.w.Hash.Valid() {
		return sy.cl.w.Hash
	}
	return sy.store.Hash()
}
