package net

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// HeadRef is the ref holding a store's current data tree: the authoritative
// state on a server, the local working state on a client.
const HeadRef = "head"

// ServerOptions configure a Server. Zero fields take the defaults shown.
type ServerOptions struct {
	// Tokens are the clients allowed to connect. SetTokens replaces them.
	Tokens []Token
	// CertDir holds cert.pem and key.pem; a self-signed certificate is
	// created there if neither exists. Required.
	CertDir string
	// Retain is how many recently published roots the server keeps for the
	// changes path. Default 64.
	Retain int
	// Logger receives connection and session events. Default: discard.
	Logger *slog.Logger
	// MaxFrame is the largest frame payload accepted or sent. Default 16 MiB.
	MaxFrame int
	// HandshakeTimeout bounds the TLS handshake plus the Hello exchange.
	// Default 10s.
	HandshakeTimeout time.Duration
	// IOTimeout bounds every read and write of a frame. Default 30s.
	IOTimeout time.Duration
	// IdleTimeout closes a session that starts no exchange for this long.
	// Default 2m.
	IdleTimeout time.Duration
	// MaxPushBytes bounds the frames of one push. Default 64 MiB.
	MaxPushBytes int
	// MaxShown bounds the node and blob hashes a session may still request.
	// Default 4M.
	MaxShown int
	// MaxSessions bounds concurrent authenticated sessions; more are
	// refused with "server busy" (code 8). Default 1024.
	MaxSessions int
	// MaxHandshakes bounds connections that have not yet authenticated;
	// each has HandshakeTimeout in total to present a valid token. Further
	// connections are refused at once. Default 256.
	MaxHandshakes int
	// MaxSessionMemory bounds the bytes one session may hold in frame
	// buffers and buffered pushes at once; an exchange that would exceed
	// it fails with "server busy". Default MaxPushBytes + 32 MiB.
	MaxSessionMemory int64
	// MaxMemory bounds the same bytes over all sessions together.
	// Default 1 GiB.
	MaxMemory int64
	// MaxWatchRanges bounds the key ranges a Watch may name: every move of
	// the head diffs each of them. Default 64.
	MaxWatchRanges int
	// Validate, if set, is called for every pushed change the server would
	// apply (after the token's write scope and the compare-and-set check),
	// serialised with other server writes. A non-nil error rejects that
	// change: it is not applied, the server's value stays, and the error's
	// text goes back to the client as the reason (SyncResult.Rejected). The
	// push's other changes still commit. value is nil when deleted is true.
	Validate func(ctx context.Context, clientID string, key, value []byte, deleted bool) error
	// OnCommit, if set, is called after each push commits with the time
	// from the push's arrival to its commit and its outcome, for metrics.
	// It runs on the push's goroutine, serialised with server writes: keep
	// it quick.
	OnCommit func(took time.Duration, accepted, overridden, rejected int)
	// Cluster, if set, makes this server one of a cluster's (package
	// cluster): the store is its local cache, pushes commit through
	// Cluster.Commit, and the head and retained roots are what the cluster
	// reports through Server.AdoptHead. Retain is then the cluster's.
	Cluster Cluster
}

func (o *ServerOptions) defaults() {
	if o.Retain <= 0 {
		o.Retain = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.IOTimeout <= 0 {
		o.IOTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxPushBytes <= 0 {
		o.MaxPushBytes = 64 << 20
	}
	if o.MaxShown <= 0 {
		o.MaxShown = 4 << 20
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1024
	}
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = 256
	}
	if o.MaxSessionMemory <= 0 {
		o.MaxSessionMemory = int64(o.MaxPushBytes) + 32<<20
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = 1 << 30
	}
	if o.MaxWatchRanges <= 0 {
		o.MaxWatchRanges = 64
	}
}

// Server serves one store's "head" tree to authenticated clients over QUIC.
// It is safe for concurrent use.
type Server struct {
	store *tree.Store
	opts  ServerOptions
	log   *slog.Logger
	cert  tls.Certificate
	fp    string

	tokMu  sync.RWMutex
	tokens map[[32]byte]tokenGrant // sha256(token) → client id and scopes

	wmu     sync.Mutex // serialises the server's ref moves
	adoptMu sync.Mutex // serialises AdoptHead (a cluster server's head moves)
	retain  *retention

	pinMu sync.Mutex
	pins  map[node.Hash]int

	// afterPush, if set (tests), runs after each push commits, in commit
	// order, before the reply is sent.
	afterPush func(sess *session, root node.Hash, changes []pushChange, overridden []uint64)

	sessions   atomic.Int64 // authenticated sessions being served
	handshakes atomic.Int64 // connections not yet authenticated
	mem        *memBudget   // bytes held for all peers

	liveMu sync.Mutex
	live   map[*session]struct{} // authenticated sessions, for token revocation

	stats serverCounters

	lnMu     sync.Mutex
	draining bool // Drain was called: Ready is false
	ln       *quic.EarlyListener
	tr       *quic.Transport
	udp      stdnet.PacketConn // the Transport does not close a socket it was given
	wg       sync.WaitGroup
}

// NewServer prepares a server for store, creating its certificate if
// needed. It does not listen yet.
func NewServer(store *tree.Store, opts ServerOptions) (*Server, error) {
	opts.defaults()
	if opts.CertDir == "" {
		return nil, errors.New("new server: ServerOptions.CertDir is required")
	}
	cert, err := loadOrCreateCert(opts.CertDir)
	if err != nil {
		return nil, err
	}
	ret, err := loadRetention(store, opts.Retain)
	if err != nil {
		return nil, err
	}
	s := &Server{
		store:  store,
		opts:   opts,
		log:    opts.Logger,
		cert:   cert,
		fp:     Fingerprint(cert.Certificate[0]),
		retain: ret,
		pins:   map[node.Hash]int{},
		mem:    &memBudget{name: "server", limit: opts.MaxMemory},
		live:   map[*session]struct{}{},
	}
	s.SetTokens(opts.Tokens)
	return s, nil
}

// Fingerprint returns the SHA-256 of the server certificate, in hex, for
// clients to pin.
func (s *Server) Fingerprint() string { return s.fp }

// tokenGrant is what a token gives a session.
type tokenGrant struct {
	clientID    string
	read, write scope.Scope
}

// SetTokens replaces the accepted tokens and their scopes. A live session
// whose token was removed, or whose client id or scopes changed, is ended
// at once (its client sees ErrUnauthorized; a follower reconnects with the
// new grant if it still has one); other sessions go on.
func (s *Server) SetTokens(toks []Token) {
	m := make(map[[32]byte]tokenGrant, len(toks))
	for _, t := range toks {
		read := orAll(t.Read)
		// A client writes only what it may read (see Token.Write).
		m[sha256.Sum256([]byte(t.Token))] = tokenGrant{clientID: t.ClientID, read: read, write: orAll(t.Write).Intersect(read)}
	}
	s.tokMu.Lock()
	s.tokens = m
	s.tokMu.Unlock()
	s.liveMu.Lock()
	var ended []*session
	for sess := range s.live {
		if g, ok := m[sess.tokenSum]; !ok || !g.equal(sess.grant) {
			ended = append(ended, sess)
		}
	}
	s.liveMu.Unlock()
	for _, sess := range ended {
		sess.endForToken(m)
	}
}

// endForToken closes a session whose token was revoked (ErrUnauthorized
// at the client) or whose grant changed (a transient error: reconnecting
// gets the new grant).
func (sess *session) endForToken(toks map[[32]byte]tokenGrant) {
	if _, ok := toks[sess.tokenSum]; ok {
		sess.s.log.Warn("arbor server: token's grant changed: session ended", "peer", sess.peer, "client", sess.clientID)
		sess.qc.CloseWithError(quic.ApplicationErrorCode(codeRegrant), "token's grant changed; reconnect")
		return
	}
	sess.s.log.Warn("arbor server: token revoked: session ended", "peer", sess.peer, "client", sess.clientID)
	sess.qc.CloseWithError(quic.ApplicationErrorCode(codeUnauthorized), "token revoked")
}

func (g tokenGrant) equal(o tokenGrant) bool {
	return g.clientID == o.clientID && g.read.String() == o.read.String() && g.write.String() == o.write.String()
}

func (s *Server) grant(token string) (tokenGrant, bool) {
	if token == "" {
		return tokenGrant{}, false
	}
	s.tokMu.RLock()
	defer s.tokMu.RUnlock()
	g, ok := s.tokens[sha256.Sum256([]byte(token))]
	return g, ok
}

// Listen binds the UDP address (such as "127.0.0.1:0").
func (s *Server) Listen(addr string) error {
	udp, err := stdnet.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	// Early: a client resuming a session may send its Hello as 0-RTT
	// data, answered before the handshake completes. A replayed Hello
	// reads the head and nothing more: the session serves no other
	// exchange until the handshake completes (session.handshake).
	ln, err := tr.ListenEarly(serverTLS(s.cert), &quic.Config{
		HandshakeIdleTimeout:  s.opts.HandshakeTimeout,
		MaxIdleTimeout:        s.opts.IdleTimeout,
		MaxIncomingStreams:    16,
		MaxIncomingUniStreams: -1,
		Allow0RTT:             true,
		InitialPacketSize:     1200,
	})
	if err != nil {
		udp.Close()
		return fmt.Errorf("server: listen %s: %w", addr, err)
	}
	s.lnMu.Lock()
	s.ln, s.tr, s.udp = ln, tr, udp
	s.lnMu.Unlock()
	return nil
}

// Addr returns the address the server listens on, or nil before Listen.
func (s *Server) Addr() stdnet.Addr {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ListenAndServe listens on addr and serves until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if err := s.Listen(addr); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve accepts connections until ctx is cancelled, then closes the
// listener, ends every session and returns nil. After Drain it refuses
// new connections until then. Listen must come first.
func (s *Server) Serve(ctx context.Context) error {
	s.lnMu.Lock()
	ln, tr, udp := s.ln, s.tr, s.udp
	s.lnMu.Unlock()
	if ln == nil {
		return errors.New("server: Serve before Listen")
	}
	s.log.Info("arbor server listening", "addr", ln.Addr().String(), "fingerprint", s.fp)
	defer func() {
		ln.Close()
		s.wg.Wait()
		tr.Close()
		udp.Close() // free the port for a restart
	}()
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("server: accept: %w", err)
		}
		s.lnMu.Lock()
		draining := s.draining
		s.lnMu.Unlock()
		if draining {
			s.stats.refusedBusy.Add(1)
			go s.refuse(qc, codeLimit, "server draining")
			continue
		}
		if s.handshakes.Add(1) > int64(s.opts.MaxHandshakes) {
			s.handshakes.Add(-1)
			s.stats.refusedBusy.Add(1)
			s.log.Warn("arbor server: busy, connection refused", "peer", qc.RemoteAddr().String(), "handshakes", s.opts.MaxHandshakes)
			go s.refuse(qc, codeLimit, "server busy")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, qc)
		}()
	}
}

// GC collects garbage in the store, keeping every retained root (they are
// refs) and every root a live session uses.
func (s *Server) GC(ctx context.Context) (tree.GCStats, error) {
	s.pinMu.Lock()
	extra := make([]node.Hash, 0, len(s.pins))
	for h := range s.pins {
		extra = append(extra, h)
	}
	s.pinMu.Unlock()
	return s.store.GC(ctx, extra...)
}

func (s *Server) pin(h node.Hash) {
	s.pinMu.Lock()
	s.pins[h]++
	s.pinMu.Unlock()
}

func (s *Server) unpin(h node.Hash) {
	s.pinMu.Lock()
	if s.pins[h]--; s.pins[h] <= 0 {
		delete(s.pins, h)
	}
	s.pinMu.Unlock()
}

// session is one authenticated connection.
type session struct {
	s        *Server
	qc       *quic.Conn
	peer     string
	clientID string
	read     scope.Scope // what the token may read: nodes on its walk, values of its keys
	write    scope.Scope // what the token may push
	c        counters

	base         node.Hash
	baseRetained bool

	mu            sync.Mutex
	published     map[node.Hash]bool     // roots shown to this client
	nodes         map[node.Hash]bound    // node hashes the client may request → the node's key interval
	sent          map[node.Hash]struct{} // nodes sent (kept only for a partial read scope: usable hints)
	blobs         map[node.Hash]bool     // blob hashes the client may request; true: a value index
	accepted      map[string]node.Hash   // key → valueHash of the value accepted from this client (zero: deleted)
	acceptedBytes int                    // key bytes held in accepted
	pinned        []node.Hash

	token    string      // the token presented, until the session is registered
	tokenSum [32]byte    // sha256 of the session's token, to find it on revocation
	grant    tokenGrant  // what the token gave when the session started
	mem      *memBudget  // bytes this session holds, within the server's
	watching atomic.Bool // a Watch exchange is open

	slot           bool      // the handshake took a session slot (Server.sessions)
	refusalCounted bool      // the handshake counted its refusal before telling the client
	welcomeRoot    node.Hash // published by the handshake
	pushRoot       node.Hash // published by the session's last push (guarded by mu)
}

func (s *Server) serveConn(ctx context.Context, qc *quic.Conn) {
	peer := qc.RemoteAddr().String()
	sess := &session{s: s, qc: qc, peer: "client " + peer,
		published: map[node.Hash]bool{}, nodes: map[node.Hash]bound{}, sent: map[node.Hash]struct{}{},
		blobs: map[node.Hash]bool{}, accepted: map[string]node.Hash{},
		mem: &memBudget{name: "session", limit: s.opts.MaxSessionMemory, parent: s.mem}}
	defer func() {
		for _, h := range sess.pinned {
			s.unpin(h)
		}
	}()
	stop := watch(ctx, qc)
	defer stop()
	var err error
	if p := qc.ConnectionState().TLS.NegotiatedProtocol; p != ALPN {
		// An older client: it understands a connection closed with an
		// error code and message, so say what to do.
		err = fmt.Errorf("%w: this server speaks %s, the client %s: upgrade the client", ErrVersion, ALPN, p)
	} else {
		err = sess.handshake(ctx)
	}
	s.handshakes.Add(-1)
	if err != nil && sess.slot {
		s.sessions.Add(-1)
	}
	if err != nil {
		if !sess.refusalCounted {
			s.stats.countRefused(err)
		}
		s.log.Warn("arbor server: handshake refused", "peer", peer, "err", err)
		s.refuse(qc, errorCode(err), truncate(err.Error()))
		return
	}
	defer s.sessions.Add(-1)
	s.stats.sessionsStarted.Add(1)
	defer func() {
		s.stats.bytesIn.Add(sess.c.recv.Load())
		s.stats.bytesOut.Add(sess.c.sent.Load())
	}()
	s.liveMu.Lock()
	s.live[sess] = struct{}{}
	s.liveMu.Unlock()
	defer func() {
		s.liveMu.Lock()
		delete(s.live, sess)
		s.liveMu.Unlock()
	}()
	s.tokMu.RLock()
	toks := s.tokens
	s.tokMu.RUnlock()
	if g, ok := toks[sess.tokenSum]; !ok || !g.equal(sess.grant) {
		// SetTokens ran between the handshake and the registration above.
		sess.endForToken(toks)
		return
	}

	s.log.Info("arbor server: session started", "peer", peer, "client", sess.clientID, "base", sess.base.Short(), "retained", sess.baseRetained)
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Exchanges in flight: a session with one (a Watch, a long pull) is not
	// idle however long it goes without starting another.
	var active atomic.Int64
	for {
		actx, cancel := context.WithTimeout(ctx, s.opts.IdleTimeout)
		st, err := qc.AcceptStream(actx)
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && active.Load() > 0 {
			continue
		}
		if err != nil {
			switch {
			case ctx.Err() != nil:
				qc.CloseWithError(0, "server shutting down")
			case errors.Is(err, context.DeadlineExceeded):
				qc.CloseWithError(quic.ApplicationErrorCode(codeLimit), "session idle")
				s.log.Info("arbor server: idle session closed", "peer", peer, "client", sess.clientID)
			default:
				s.log.Info("arbor server: session ended", "peer", peer, "client", sess.clientID,
					"sent", sess.c.sent.Load(), "received", sess.c.recv.Load(), "exchanges", sess.c.exchanges.Load(), "duration", time.Since(start))
			}
			return
		}
		sess.c.exchanges.Add(1)
		wg.Add(1)
		active.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			// The exchange's write buffer counts against the budgets too.
			if err := sess.mem.take(exchangeWriteBuffer); err != nil {
				s.stats.exchangesFailed.Add(1)
				st.CancelRead(quic.StreamErrorCode(codeLimit))
				st.CancelWrite(quic.StreamErrorCode(codeLimit))
				qc.CloseWithError(quic.ApplicationErrorCode(codeLimit), truncate(err.Error()))
				return
			}
			defer sess.mem.give(exchangeWriteBuffer)
			ex := newExchange(st, &sess.c, s.opts.IOTimeout, s.opts.MaxFrame, sess.peer)
			ex.fr.mem = sess.mem
			defer ex.fr.release()
			if err := sess.handle(ctx, ex); err != nil {
				s.stats.exchangesFailed.Add(1)
				s.log.Warn("arbor server: exchange failed", "peer", peer, "client", sess.clientID, "err", err)
				ex.fail(err)
				// A failed exchange ends the session: the client either broke
				// the protocol, stalled past a deadline, or went away.
				qc.CloseWithError(quic.ApplicationErrorCode(errorCode(err)), truncate(err.Error()))
				return
			}
			ex.st.Close()
		}()
	}
}

// refuse closes a connection with an error code and message. Accepted
// early, a connection may still be in its TLS handshake, where QUIC sends
// no application code or reason (its Initial and Handshake packets are
// not confidential): wait until the handshake completes, at most the
// handshake timeout, so the client learns why.
func (s *Server) refuse(qc *quic.Conn, code uint64, msg string) {
	t := time.NewTimer(s.opts.HandshakeTimeout)
	defer t.Stop()
	select {
	case <-qc.HandshakeComplete():
	case <-qc.Context().Done():
	case <-t.C:
	}
	qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

func truncate(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}

func (sess *session) handshake(ctx context.Context) error {
	s := sess.s
	hctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
	defer cancel()
	st, err := sess.qc.AcceptStream(hctx)
	if err != nil {
		return fmt.Errorf("no Hello within %v: %w", s.opts.HandshakeTimeout, err)
	}
	sess.c.exchanges.Add(1)
	// The Hello is small: cap its frame well below MaxFrame. Its reads and
	// writes share one deadline, so a peer trickling bytes cannot hold a
	// handshake slot past HandshakeTimeout.
	ex := newExchange(st, &sess.c, 0, 64<<10, sess.peer)
	defer ex.st.Close()
	if dl, ok := hctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	f, err := ex.recv(msgHello)
	if err != nil {
		sess.refuse(ex, err)
		return err
	}
	h, err := decodeHello(f.Payload)
	if err == nil {
		err = ex.expectEOF()
	}
	if err != nil {
		sess.refuse(ex, err)
		return err
	}
	g, ok := s.grant(h.Token)
	id := g.clientID
	if !ok {
		err := fmt.Errorf("%w: unknown or missing token", ErrUnauthorized)
		if h.Token == "" {
			err = fmt.Errorf("%w: no token given", ErrUnauthorized)
		}
		sess.refuse(ex, err)
		return err
	}
	if h.Flags&flagAudit != 0 {
		s.stats.audit.Add(1)
	}
	sess.clientID, sess.read, sess.write = id, g.read, g.write
	sess.tokenSum, sess.grant = sha256.Sum256([]byte(h.Token)), g
	sess.peer = fmt.Sprintf("client %s (%s)", id, sess.qc.RemoteAddr())
	// An audit reads one root; a fresh replica takes the server's hash and
	// configuration before it stores anything (it pushes nothing).
	adopts := h.Flags&flagAudit != 0 || h.Flags&flagFresh != 0 && h.Flags&flagPush == 0 && h.Base.IsZero()
	if !adopts && h.Hash != s.store.Hash() {
		err := fmt.Errorf("%w: the client's store hashes with %s, this server's with %s", ErrConfigMismatch, h.Hash, s.store.Hash())
		sess.refuse(ex, err)
		return err
	}
	if !adopts && h.Config.WithDefaults() != s.store.Config() {
		err := fmt.Errorf("%w: server %+v, client %+v", ErrConfigMismatch, s.store.Config(), h.Config.WithDefaults())
		sess.refuse(ex, err)
		return err
	}
	root, err := s.publishHead(ctx)
	if err != nil {
		sess.refuse(ex, err)
		return err
	}
	// The session's slot is taken before the Welcome goes out: a client
	// that is welcomed has one.
	if s.sessions.Add(1) > int64(s.opts.MaxSessions) {
		s.sessions.Add(-1)
		err := fmt.Errorf("%w: server busy (%d sessions)", errLimit, s.opts.MaxSessions)
		sess.refuse(ex, err)
		return err
	}
	sess.slot = true
	w := welcome{ClientID: id, Root: root, Config: s.store.Config(), Read: sess.read, Write: sess.write, Hash: s.store.Hash()}
	// A partial read scope walks: the changes path would diff whole trees.
	if !h.Base.IsZero() && h.Flags&flagWalk == 0 && sess.read.IsAll() && s.retain.has(h.Base) {
		if ok, _ := s.store.HasNode(h.Base); ok {
			sess.base, sess.baseRetained = h.Base, true
			sess.pinRoot(h.Base)
		}
	}
	w.Retained = sess.baseRetained
	sess.publish(root)
	sess.welcomeRoot = root
	if h.Flags&(flagAudit|flagPush) == 0 && !sess.baseRetained && root != h.Base {
		// The client will walk: send the root node now and save a round trip.
		n, err := s.store.Node(ctx, root)
		if err != nil {
			sess.refuse(ex, err)
			return err
		}
		if len(n.Raw()) < s.opts.MaxFrame-1024 {
			if err := sess.served(n, bound{open: true}); err != nil {
				sess.refuse(ex, err)
				return err
			}
			w.RootNode = n.Raw()
		}
	}
	if err := ex.send(msgWelcome, w.encode()); err != nil {
		return err
	}
	if err := ex.flush(); err != nil {
		return err
	}
	// End the stream now: the client reads to its end, and must not wait
	// for the handshake below too.
	ex.st.Close()
	// The Hello may have come as 0-RTT data, which anyone who recorded it
	// can replay; it only read the head. Nothing that writes or sends
	// records runs before the client proves it holds the session's keys.
	select {
	case <-sess.qc.HandshakeComplete():
		return nil
	case <-hctx.Done():
		return fmt.Errorf("TLS handshake not completed within %v: %w", s.opts.HandshakeTimeout, hctx.Err())
	case <-sess.qc.Context().Done():
		return fmt.Errorf("connection closed during the TLS handshake: %w", context.Cause(sess.qc.Context()))
	}
}

// refuse counts a refused handshake, then tells the client why: counted
// first, so that a client that has heard finds the server's stats agree.
func (sess *session) refuse(ex *exchange, err error) {
	sess.s.stats.countRefused(err)
	sess.refusalCounted = true
	ex.fail(err)
}

// publishHead retains the server's current root and returns it.
func (s *Server) publishHead(ctx context.Context) (node.Hash, error) {
	if s.opts.Cluster != nil {
		// Read your writes across servers: a client whose push another
		// server acknowledged sees it here. If the cluster cannot say
		// (etcd unreachable), serve the last head this server knows:
		// pushes fail until etcd is back, pulls go on.
		cctx, cancel := context.WithTimeout(ctx, clusterCurrentTimeout)
		err := s.opts.Cluster.Current(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("arbor server: cluster head unconfirmed; serving this server's last known head", "err", err)
		}
		return s.store.Root(HeadRef) // a cluster retains every head it commits
	}
	root, err := s.store.Root(HeadRef)
	if err != nil {
		return root, err
	}
	if last, ok := s.retain.latest(); ok && last == root {
		return root, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	root, err = s.store.Root(HeadRef)
	if err != nil {
		return root, err
	}
	b, err := s.store.NewBatch()
	if err != nil {
		return root, err
	}
	apply := s.retain.plan(b, root)
	if err := b.Commit(ctx); err != nil {
		return root, err
	}
	apply()
	return root, nil
}

func (sess *session) pinRoot(h node.Hash) {
	sess.s.pin(h)
	sess.pinned = append(sess.pinned, h)
}

// publish shows root to the client: it may fetch it and diff to it.
func (sess *session) publish(root node.Hash) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.published[root] {
		return
	}
	sess.published[root] = true
	sess.nodes[root] = bound{open: true}
	sess.s.pin(root)
	sess.pinned = append(sess.pinned, root)
}

// publishPush publishes the root a push of this session committed, and
// withdraws the one its previous push published: a client pulls from its
// last push's root, so a session that pushes again and again holds two
// roots (Welcome's and its last push's), not one pin per push.
func (sess *session) publishPush(root node.Hash) {
	sess.mu.Lock()
	old, welcome := sess.pushRoot, sess.welcomeRoot
	sess.pushRoot = root
	sess.mu.Unlock()
	sess.publish(root)
	if !old.IsZero() && old != root && old != welcome {
		sess.unpublish(old)
	}
}

// unpublish withdraws a root published to the session: it may no longer
// be fetched, and the session no longer pins it.
func (sess *session) unpublish(root node.Hash) {
	sess.mu.Lock()
	if !sess.published[root] {
		sess.mu.Unlock()
		return
	}
	delete(sess.published, root)
	delete(sess.nodes, root)
	if i := slices.Index(sess.pinned, root); i >= 0 {
		sess.pinned = slices.Delete(sess.pinned, i, i+1)
	}
	sess.mu.Unlock()
	sess.s.unpin(root)
}

// bound is a node's key interval for scope tests: its keys lie above lo
// (nil: unbounded); open marks a node on the tree's right edge, whose
// interval is unbounded above.
type bound struct {
	lo   []byte
	open bool
}

// served records that n, with key interval b, was sent: its children whose
// key interval overlaps the session's read scope (or the value blobs of its
// keys in that scope) may now be requested.
func (sess *session) served(n *node.Node, b bound) error {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	all := sess.read.IsAll()
	if !all {
		if len(sess.sent) >= sess.s.opts.MaxShown {
			// Bounded: forgetting costs only deltas against older hints
			// (the node is then sent whole). A new map: clear would keep
			// the grown one's memory.
			sess.sent = map[node.Hash]struct{}{}
		}
		sess.sent[n.Hash()] = struct{}{}
	}
	if n.IsLeaf() && n.Refs() == 0 {
		return nil // inline values only: nothing more to show
	}
	for i := 0; i < n.Len(); i++ {
		if n.IsLeaf() {
			if p := n.Payload(i); p[0] == 0 {
				continue // inline value
			}
			if !all && !sess.read.Contains(n.Key(i)) {
				continue
			}
			if v := n.Value(i); v.IsRef {
				sess.blobs[v.Ref] = true
			}
			continue
		}
		c, _ := n.Child(i)
		if all {
			// Bounds matter only to a partial scope: one map write, no
			// merging with an earlier showing.
			sess.nodes[c] = bound{}
			continue
		}
		clo := b.lo
		if i > 0 {
			clo = n.Key(i - 1)
		}
		hi, open := childHi(n, i, b.open)
		if !sess.read.Overlaps(clo, hi) {
			continue // wholly outside the read scope: never served
		}
		sess.showNode(c, bound{lo: clo, open: open})
	}
	if len(sess.nodes)+len(sess.blobs) > sess.s.opts.MaxShown {
		return fmt.Errorf("%w: more than %d outstanding hashes", errLimit, sess.s.opts.MaxShown)
	}
	return nil
}

// showNode lets the client request h, with key interval b. A node shown at
// two positions keeps the looser bounds. sess.mu is held.
func (sess *session) showNode(h node.Hash, b bound) {
	if old, ok := sess.nodes[h]; ok {
		if old.lo == nil || (b.lo != nil && string(old.lo) < string(b.lo)) {
			b.lo = old.lo
		}
		b.open = b.open || old.open
	}
	sess.nodes[h] = b
}

// takeNode checks that h was shown to the client and forgets it, returning
// its key interval.
func (sess *session) takeNode(h node.Hash) (lo bound, ok bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	lo, ok = sess.nodes[h]
	if ok {
		delete(sess.nodes, h)
	}
	return lo, ok
}

// usableHint reports whether the client may use h as a delta hint: any node
// for a session that may read everything, else only a node it was sent.
func (sess *session) usableHint(h node.Hash) bool {
	if sess.read.IsAll() {
		return true
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	_, ok := sess.sent[h]
	return ok
}

func (sess *session) takeBlob(h node.Hash) (isIndex, ok bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	isIndex, ok = sess.blobs[h]
	if ok {
		delete(sess.blobs, h)
	}
	return isIndex, ok
}

// handle serves one exchange.
func (sess *session) handle(ctx context.Context, ex *exchange) error {
	err := sess.handle1(ctx, ex)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: truncated frame: %w", ErrProtocol, err)
	}
	return err
}

func (sess *session) handle1(ctx context.Context, ex *exchange) error {
	f, err := ex.recv(msgGetNodes, msgGetTree, msgGetBlobs, msgPush, msgGetChange, msgWatch)
	if err != nil {
		return err
	}
	if f.Type != msgPush {
		// Requests are one frame; push ends with End (checked in push).
		f.Payload = append([]byte(nil), f.Payload...)
		if err := ex.expectEOF(); err != nil {
			return err
		}
		// Nothing more is read: return the read buffer to the budgets
		// now, not when a long exchange (a Watch) ends.
		ex.fr.release()
	}
	st := &sess.s.stats
	switch f.Type {
	case msgGetNodes:
		st.walk.Add(1)
		return sess.getNodes(ctx, ex, f.Payload)
	case msgGetTree:
		st.tree.Add(1)
		return sess.getTree(ctx, ex, f.Payload)
	case msgGetBlobs:
		return sess.getBlobs(ctx, ex, f.Payload)
	case msgGetChange:
		st.changes.Add(1)
		return sess.getChanges(ctx, ex, f.Payload)
	case msgWatch:
		st.watchers.Add(1)
		defer st.watchers.Add(-1)
		return sess.watch(ctx, ex, f.Payload)
	default:
		st.push.Add(1)
		return sess.push(ctx, ex, f)
	}
}

// maxRequestHashes bounds the hashes of one GetNodes or GetBlobs request.
const maxRequestHashes = 1 << 16

func (sess *session) getNodes(ctx context.Context, ex *exchange, p []byte) error {
	rs, err := decodeNodeReqs(sess.s.store.Hash(), p, maxRequestHashes)
	if err != nil {
		return err
	}
	for i, r := range rs {
		if i%prefetchBatch == 0 {
			if sess.s.store.HasRemote() {
				batch := rs[i:min(i+prefetchBatch, len(rs))]
				hs := make([]node.Hash, len(batch))
				for j, r := range batch {
					hs[j] = r.Hash
				}
				prefetch(ctx, sess.s.store, hs)
			}
		}
		h := r.Hash
		lo, ok := sess.takeNode(h)
		if !ok {
			return fmt.Errorf("%w: node %s", errForbidden, h)
		}
		n, err := sess.s.store.Node(ctx, h)
		if err != nil {
			return fmt.Errorf("node %s: %w", h, err)
		}
		if err := sess.served(n, lo); err != nil {
			return err
		}
		// A hint the server does not hold (or a bad one) just means a full
		// node; so does one outside what a partial scope was sent.
		if !r.Hint.IsZero() && sess.usableHint(r.Hint) {
			if hn, err := sess.s.store.Node(ctx, r.Hint); err == nil {
				if delta := encodeNodeDelta(n, hn); delta != nil {
					// The client may ask again for the whole node if its
					// copy of the hint turns out corrupt.
					sess.mu.Lock()
					sess.showNode(h, lo)
					sess.mu.Unlock()
					if err := ex.send(msgNodeDelta, delta); err != nil {
						return err
					}
					continue
				}
			}
		}
		if err := ex.send(msgNode, n.Raw()); err != nil {
			return err
		}
	}
	hs := rs
	if err := ex.send(msgEnd, encodeEnd(uint64(len(hs)))); err != nil {
		return err
	}
	return ex.flush()
}

// getTree streams the whole subtree under each requested node, depth first
// in key order: a node, then its children's subtrees, left to right; a
// leaf's out-of-line values follow it, each as its value index and then
// the index's chunks. The client knows from each node which hashes come
// next and checks everything against them, so nothing under a requested
// node needs to be shown and taken one by one as GetNodes and GetBlobs do:
// that bookkeeping, and a request and a round trip per level, are what a
// clone saves. Only a session that may read every key is served (a partial
// one walks node by node, pruned to its scope).
func (sess *session) getTree(ctx context.Context, ex *exchange, p []byte) error {
	hs, err := decodeHashes(msgGetTree, sess.s.store.Hash(), p, maxRequestHashes)
	if err != nil {
		return err
	}
	if !sess.read.IsAll() {
		return fmt.Errorf("%w: GetTree needs a read scope of every key", errForbidden)
	}
	// path runs from the requested node down to the current one: each
	// branch with the index of its next child to send.
	type step struct {
		n    *node.Node
		next int
	}
	var path []step
	var sent uint64
	// Every requested node must have been shown before anything is read
	// for it (a cold cluster server reads from S3).
	for _, h := range hs {
		if _, ok := sess.takeNode(h); !ok {
			return fmt.Errorf("%w: node %s", errForbidden, h)
		}
	}
	pf := sess.newTreePrefetcher(ctx, hs)
	defer pf.stop()
	for _, h := range hs {
		for {
			n, err := sess.s.store.Node(ctx, h)
			if err != nil {
				return fmt.Errorf("node %s: %w", h, err)
			}
			if err := ex.send(msgNode, n.Raw()); err != nil {
				return err
			}
			sent++
			if n.IsLeaf() {
				if err := sess.sendValues(ctx, ex, n); err != nil {
					return err
				}
			} else if n.Len() > 0 {
				pf.reached(n, len(path) == 0)
				path = append(path, step{n: n})
			}
			for len(path) > 0 && path[len(path)-1].next == path[len(path)-1].n.Len() {
				path = path[:len(path)-1]
			}
			if len(path) == 0 {
				break
			}
			top := &path[len(path)-1]
			h, _ = top.n.Child(top.next)
			top.next++
		}
	}
	if err := ex.send(msgEnd, encodeEnd(sent)); err != nil {
		return err
	}
	return ex.flush()
}

// prefetchBatch bounds the nodes one prefetch reads (and decodes) at once.
const prefetchBatch = 2048

// prefetch reads the nodes hs into a read-through store's cache
// (a cluster server's, cold) in one batch: a few ranged GETs of the packs
// instead of one per node as the stream reaches each. A local store needs
// none. Errors are left to the reads that follow, which report them.
func prefetch(ctx context.Context, st *tree.Store, hs []node.Hash) []*node.Node {
	if !st.HasRemote() || len(hs) == 0 {
		return nil
	}
	ns, err := st.Nodes(ctx, hs)
	if err != nil {
		return nil
	}
	return ns
}

// treePrefetcher warms a read-through store (a cluster server's cache,
// cold) ahead of a subtree stream, so that the stream reads its nodes
// locally instead of with an S3 GET each. The leaves under each branch one
// level above them (about a hundred, which a pack holds together: one or
// two ranged GETs) are one job. When the stream reaches a branch two
// levels above the leaves, it reads that branch's children in one batch
// and queues a job for each; prefetchWorkers goroutines run the jobs in
// stream order, at most prefetchAhead jobs past the one the stream waits
// for, so the stream sends one subtree while the next ones are read and
// waits only when the store is slower than the stream. A local store
// needs none.
type treePrefetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	st     *tree.Store
	wg     sync.WaitGroup

	mu       sync.Mutex
	cond     *sync.Cond
	pending  []*prefetchJob             // queued and not started, in stream order
	byHash   map[node.Hash]*prefetchJob // queued jobs by the branch whose leaves they read
	queued   int                        // jobs queued so far
	streamAt int                        // the sequence number of the job the stream last reached
	stopped  bool
}

type prefetchJob struct {
	seq  int
	hs   []node.Hash
	done chan struct{}
}

const (
	prefetchWorkers = 4
	prefetchAhead   = 16
)

// newTreePrefetcher starts the prefetch of a stream of the subtrees under
// hs: it reads the requested nodes in one batch and queues a job for each
// one level above the leaves (a clone asks for such branches by the
// thousand, in a few requests).
func (sess *session) newTreePrefetcher(ctx context.Context, hs []node.Hash) *treePrefetcher {
	st := sess.s.store
	if !st.HasRemote() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	pf := &treePrefetcher{ctx: ctx, cancel: cancel, st: st, byHash: map[node.Hash]*prefetchJob{}}
	pf.cond = sync.NewCond(&pf.mu)
	for range prefetchWorkers {
		pf.wg.Add(1)
		go pf.work()
	}
	// The first prefetchBatch requested nodes at most (a clone asks for a
	// few thousand per request): the jobs' memory stays bounded, and the
	// stream reads any later ones itself.
	pf.queueLeaves(prefetch(ctx, st, hs[:min(len(hs), prefetchBatch)]))
	return pf
}

// queueLeaves queues, in order, a job for the leaves of each branch of ns
// one level above them.
func (pf *treePrefetcher) queueLeaves(ns []*node.Node) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	for _, k := range ns {
		if k.Level() != 1 {
			continue
		}
		if _, ok := pf.byHash[k.Hash()]; ok {
			continue // asked for twice: the stream sends it twice, the first time waits
		}
		j := &prefetchJob{seq: pf.queued, hs: children(k), done: make(chan struct{})}
		pf.queued++
		pf.pending = append(pf.pending, j)
		pf.byHash[k.Hash()] = j
	}
	pf.cond.Broadcast()
}

func (pf *treePrefetcher) work() {
	defer pf.wg.Done()
	for {
		pf.mu.Lock()
		for !pf.stopped && (len(pf.pending) == 0 || pf.pending[0].seq >= pf.streamAt+prefetchAhead) {
			pf.cond.Wait()
		}
		if pf.stopped {
			pf.mu.Unlock()
			return
		}
		j := pf.pending[0]
		pf.pending = pf.pending[1:]
		pf.mu.Unlock()
		prefetch(pf.ctx, pf.st, j.hs)
		close(j.done)
	}
}

func (pf *treePrefetcher) stop() {
	if pf == nil {
		return
	}
	pf.cancel()
	pf.mu.Lock()
	pf.stopped = true
	pf.cond.Broadcast()
	pf.mu.Unlock()
	pf.wg.Wait()
}

// reached is called as the stream descends into branch n (top: the
// requested node itself).
func (pf *treePrefetcher) reached(n *node.Node, top bool) {
	if pf == nil {
		return
	}
	switch {
	case n.Level() == 1:
		pf.mu.Lock()
		j, ok := pf.byHash[n.Hash()]
		if ok {
			delete(pf.byHash, n.Hash())
			pf.streamAt = j.seq
			pf.cond.Broadcast()
		}
		pf.mu.Unlock()
		if ok {
			select {
			case <-j.done:
			case <-pf.ctx.Done():
			}
		} else if top {
			prefetch(pf.ctx, pf.st, children(n))
		}
	case n.Level() == 2:
		pf.queueLeaves(prefetch(pf.ctx, pf.st, children(n)))
	default:
		prefetch(pf.ctx, pf.st, children(n))
	}
}

func children(n *node.Node) []node.Hash {
	hs := make([]node.Hash, n.Len())
	for i := range hs {
		hs[i], _ = n.Child(i)
	}
	return hs
}

// sendValues sends, for a subtree stream, the blobs of leaf n's out-of-line
// values in the order of its keys: each value's index, then its chunks.
func (sess *session) sendValues(ctx context.Context, ex *exchange, n *node.Node) error {
	for i := 0; i < n.Len() && n.Refs() > 0; i++ {
		if p := n.Payload(i); p[0] == 0 {
			continue // inline value
		}
		v := n.Value(i)
		if !v.IsRef {
			continue
		}
		ix, err := sess.s.store.Blob(ctx, v.Ref)
		if err != nil {
			return fmt.Errorf("blob %s: %w", v.Ref, err)
		}
		chunks, _, err := node.DecodeValueIndex(sess.s.store.Hash(), ix)
		if err != nil {
			return fmt.Errorf("value index %s: %w", v.Ref, err)
		}
		if err := ex.send(msgBlob, ix); err != nil {
			return err
		}
		for _, c := range chunks {
			b, err := sess.s.store.Blob(ctx, c.Hash)
			if err != nil {
				return fmt.Errorf("blob %s: %w", c.Hash, err)
			}
			if err := ex.send(msgBlob, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (sess *session) getBlobs(ctx context.Context, ex *exchange, p []byte) error {
	hs, err := decodeHashes(msgGetBlobs, sess.s.store.Hash(), p, maxRequestHashes)
	if err != nil {
		return err
	}
	for _, h := range hs {
		isIndex, ok := sess.takeBlob(h)
		if !ok {
			return fmt.Errorf("%w: blob %s", errForbidden, h)
		}
		b, err := sess.s.store.Blob(ctx, h)
		if err != nil {
			return fmt.Errorf("blob %s: %w", h, err)
		}
		if isIndex {
			chunks, _, err := node.DecodeValueIndex(sess.s.store.Hash(), b)
			if err != nil {
				return fmt.Errorf("value index %s: %w", h, err)
			}
			sess.mu.Lock()
			for _, c := range chunks {
				if _, ok := sess.blobs[c.Hash]; !ok {
					sess.blobs[c.Hash] = false
				}
			}
			sess.mu.Unlock()
		}
		if err := ex.send(msgBlob, b); err != nil {
			return err
		}
	}
	if err := ex.send(msgEnd, encodeEnd(uint64(len(hs)))); err != nil {
		return err
	}
	return ex.flush()
}

func (sess *session) getChanges(ctx context.Context, ex *exchange, p []byte) error {
	m, err := decodeGetChanges(sess.s.store.Hash(), p)
	if err != nil {
		return err
	}
	sess.mu.Lock()
	okTo := sess.published[m.To]
	sess.mu.Unlock()
	if !sess.baseRetained || m.From != sess.base || !okTo || !sess.read.IsAll() {
		return fmt.Errorf("%w: changes %s→%s (session base %s)", errForbidden, m.From.Short(), m.To.Short(), sess.base.Short())
	}
	var n uint64
	buf := make([]byte, 0, 2048)
	for c, err := range diffTrees(ctx, sess.s.store, m.From, m.To) {
		if err != nil {
			return fmt.Errorf("diff %s→%s: %w", m.From.Short(), m.To.Short(), err)
		}
		if sess.isEcho(c) {
			continue
		}
		if c.New != nil && c.New.IsRef {
			sess.mu.Lock()
			sess.blobs[c.New.Ref] = true
			sess.mu.Unlock()
		}
		buf = change{Key: c.Key, New: c.New}.encode(buf[:0])
		if err := ex.send(msgChange, buf); err != nil {
			return err
		}
		n++
	}
	if err := ex.send(msgEnd, encodeEnd(n)); err != nil {
		return err
	}
	return ex.flush()
}

// isEcho reports whether c is this client's own accepted change.
func (sess *session) isEcho(c diffChange) bool {
	sess.mu.Lock()
	h, ok := sess.accepted[string(c.Key)]
	sess.mu.Unlock()
	if !ok {
		return false
	}
	if c.New == nil {
		return h.IsZero()
	}
	return h == valueHash(sess.s.store.Hash(), *c.New)
}

// push receives one push (Push frames then End), applies every change whose
// starting value still matches the server's, and commits them atomically.
// Keys are checked against the write scope as they arrive, so a refused
// push is cut off at its first forbidden key, and the bytes it buffers
// count against the session's and the server's memory budgets.
func (sess *session) push(ctx context.Context, ex *exchange, first frame) error {
	s := sess.s
	var changes []pushChange
	total := 0
	held := int64(0)
	defer func() { sess.mem.give(held) }()
	f := first
	for {
		total += len(f.Payload) + maxHeader
		if total > s.opts.MaxPushBytes {
			return fmt.Errorf("%w: push over %d bytes", errLimit, s.opts.MaxPushBytes)
		}
		if f.Type == msgEnd {
			n, err := decodeEnd(f.Payload)
			if err != nil {
				return err
			}
			if n != uint64(len(changes)) {
				return fmt.Errorf("%w: push End says %d changes, got %d", ErrProtocol, n, len(changes))
			}
			if err := ex.expectEOF(); err != nil {
				return err
			}
			break
		}
		c, err := decodePushChange(sess.s.store.Hash(), f.Payload)
		if err != nil {
			return err
		}
		if !sess.write.Contains(c.Key) {
			return fmt.Errorf("%w: client %s may not write %q (write scope %s); push refused, nothing applied",
				ErrForbiddenScope, sess.clientID, c.Key, sess.write)
		}
		if len(changes) > 0 && string(changes[len(changes)-1].Key) >= string(c.Key) {
			return fmt.Errorf("%w: push keys not strictly ascending at %q", ErrProtocol, c.Key)
		}
		need := int64(len(c.Key) + len(c.Value) + pushChangeOverhead)
		if err := sess.mem.take(need); err != nil {
			return fmt.Errorf("push of client %s: %w", sess.clientID, err)
		}
		held += need
		c.Key = append([]byte(nil), c.Key...)
		c.Value = append([]byte(nil), c.Value...)
		changes = append(changes, c)
		var err2 error
		f, err2 = ex.recv(msgPush, msgEnd)
		if err2 != nil {
			return err2
		}
	}
	res, err := s.applyPush(ctx, sess, changes)
	if err != nil {
		return err
	}
	if err := ex.send(msgPushDone, res.encode(sess.s.store.Hash())); err != nil {
		return err
	}
	return ex.flush()
}

// maxAcceptedBytes bounds the memory a session keeps for echo suppression
// (keys, hashes and the map's own cost per entry); past it the session
// forgets them (its client then receives its own changes back, which is
// harmless).
const maxAcceptedBytes = 16 << 20

// acceptedEntryOverhead is what an echo-suppression entry costs beyond its
// key bytes: the string header, the 16-byte hash and the map's slot.
const acceptedEntryOverhead = 72

// checkPushAddresses is false only in a benchmark that measures what the
// address checks cost.
var checkPushAddresses = true

// pushChangeOverhead is what a buffered change costs beyond its key and
// value bytes, for the memory budgets.
const pushChangeOverhead = 96

// validate runs the Validate hook on change i; on rejection it records it
// in res and returns true.
func (s *Server) validate(ctx context.Context, sess *session, c pushChange, res *pushDone, i int) bool {
	var v []byte
	if !c.Delete {
		v = c.Value
	}
	err := s.opts.Validate(ctx, sess.clientID, c.Key, v, c.Delete)
	if err == nil {
		return false
	}
	res.Overridden = append(res.Overridden, uint64(i))
	res.Rejected = append(res.Rejected, rejection{Index: uint64(i), Reason: err.Error()})
	s.log.Info("arbor server: change rejected by validation", "client", sess.clientID, "key", string(c.Key), "reason", err.Error())
	return true
}

// storedForm returns the stored form of value v (inline, or a reference to
// its value index) without storing anything: the server decides what it
// applies before it writes a byte of it.
func storedForm(alg node.Alg, v []byte) (node.Value, []node.Chunk, error) {
	if len(v) <= node.MaxInlineValue {
		return node.InlineValue(v), nil, nil
	}
	if len(v) > node.MaxValueSize {
		return node.Value{}, nil, fmt.Errorf("%w: value of %d bytes (limit %d)", tree.ErrValueTooLarge, len(v), node.MaxValueSize)
	}
	sizes := chunker.SplitValue(v)
	chunks := make([]node.Chunk, len(sizes))
	off := 0
	for i, n := range sizes {
		chunks[i] = node.Chunk{Hash: alg.Sum(v[off : off+n]), Size: uint32(n)}
		off += n
	}
	return node.RefValue(alg.Sum(node.EncodeValueIndex(alg, chunks)), uint64(len(v))), chunks, nil
}

// checkBlobAddresses refuses, before anything of the push is written, a
// push whose value chunks or indexes would land under an address that
// holds other bytes, in the store or elsewhere in the push (a crafted
// collision). The push batch checks every write again; this check comes
// first so that a refused push leaves nothing behind, even what a batch
// writes ahead of its commit. Server writes are serialised (wmu), so no
// other writer can store an address between this check and the batch.
func (s *Server) checkBlobAddresses(ctx context.Context, sess *session, changes []pushChange, chunks [][]node.Chunk, apply []int) error {
	seen := map[node.Hash][]byte{}
	check := func(key []byte, h node.Hash, raw []byte) error {
		if prev, ok := seen[h]; ok {
			if !bytes.Equal(prev, raw) {
				return pushStoreError(sess, key, fmt.Errorf("blob %s: %w (two values of the push)", h, tree.ErrAddressConflict))
			}
			return nil
		}
		seen[h] = raw
		ok, err := s.store.HasBlob(h)
		if err != nil || !ok {
			return err
		}
		stored, err := s.store.Blob(ctx, h)
		if err != nil {
			return err
		}
		if !bytes.Equal(stored, raw) {
			return pushStoreError(sess, key, fmt.Errorf("blob %s: %w (address already stored with different bytes)", h, tree.ErrAddressConflict))
		}
		return nil
	}
	for _, i := range apply {
		c := changes[i]
		if c.Delete || chunks[i] == nil {
			continue
		}
		off := 0
		for _, ch := range chunks[i] {
			if err := check(c.Key, ch.Hash, c.Value[off:off+int(ch.Size)]); err != nil {
				return err
			}
			off += int(ch.Size)
		}
		index := node.EncodeValueIndex(s.store.Hash(), chunks[i])
		if err := check(c.Key, s.store.Hash().Sum(index), index); err != nil {
			return err
		}
	}
	return nil
}

// applyPush decides every change against the server's current head, then
// stores the values of the changes it applies, and only those, and commits.
// Every key is inside the session's read scope (its write scope is), so
// the answer reveals nothing the client may not read.
func (s *Server) applyPush(ctx context.Context, sess *session, changes []pushChange) (pushDone, error) {
	start := time.Now()
	forms := make([]node.Value, len(changes))
	chunks := make([][]node.Chunk, len(changes))
	for i, c := range changes {
		if c.Delete {
			continue
		}
		v, cs, err := storedForm(s.store.Hash(), c.Value)
		if err != nil {
			return pushDone{}, fmt.Errorf("%w: push key %q: %v", ErrProtocol, c.Key, err)
		}
		forms[i], chunks[i] = v, cs
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// The push may have waited for the lock: a session its token's
	// revocation (or any other end) closed meanwhile writes nothing.
	if sess.qc == nil {
		// A session without a connection: only benchmarks make one.
	} else if err := context.Cause(sess.qc.Context()); err != nil {
		return pushDone{}, fmt.Errorf("%w: push of client %s: session ended before its push was applied: %v", errLimit, sess.clientID, err)
	}
	var clusterHead node.Hash // the cluster's head after a lost commit race
	for {
		old, had, err := s.store.Ref(HeadRef)
		if err != nil {
			return pushDone{}, err
		}
		cur := old
		if !had {
			cur = s.store.EmptyRoot()
		}
		if !clusterHead.IsZero() {
			cur = clusterHead
		}
		var res pushDone
		var apply []int
		accepted := map[string]node.Hash{}
		for i, c := range changes {
			sv, err := s.store.GetValue(ctx, cur, c.Key)
			var curHash node.Hash
			present := true
			switch {
			case errors.Is(err, tree.ErrNotFound):
				present = false
			case err != nil:
				return pushDone{}, fmt.Errorf("push key %q: %w", c.Key, err)
			default:
				curHash = valueHash(s.store.Hash(), sv)
			}
			var newHash node.Hash
			if !c.Delete {
				newHash = valueHash(s.store.Hash(), forms[i])
			}
			same := (c.Delete && !present) || (!c.Delete && present && newHash == curHash)
			match := (c.HasFrom == present) && (!present || c.From == curHash)
			switch {
			case !same && !match:
				res.Overridden = append(res.Overridden, uint64(i))
			case s.opts.Validate != nil && s.validate(ctx, sess, c, &res, i):
				// Rejected by the embedder's validation: the server's value stays.
			case same:
				// Already the server's value (an earlier push that lost its reply).
				res.Accepted++
				accepted[string(c.Key)] = newHash
			default:
				res.Accepted++
				accepted[string(c.Key)] = newHash
				apply = append(apply, i)
			}
		}
		if checkPushAddresses {
			if err := s.checkBlobAddresses(ctx, sess, changes, chunks, apply); err != nil {
				return pushDone{}, err
			}
		}
		b, err := s.store.NewBatch()
		if err != nil {
			return pushDone{}, err
		}
		if checkPushAddresses {
			// Never two contents for one address: the blobs were checked
			// above (under wmu, so still true); the batch checks its nodes.
			b.CheckNodeAddresses()
		}
		edits := make([]tree.StoredEdit, 0, len(apply))
		for _, i := range apply {
			c := changes[i]
			if c.Delete {
				edits = append(edits, tree.StoredEdit{Key: c.Key})
				continue
			}
			v, err := b.StoreValue(c.Value)
			if err != nil {
				b.Discard()
				return pushDone{}, pushStoreError(sess, c.Key, err)
			}
			edits = append(edits, tree.StoredEdit{Key: c.Key, Value: &v})
		}
		root, err := b.ApplyValues(ctx, cur, edits)
		if err != nil {
			b.Discard()
			return pushDone{}, pushStoreError(sess, nil, err)
		}
		done := func() {}
		if s.opts.Cluster == nil {
			b.ExpectRef(HeadRef, old, had)
			b.SetRef(HeadRef, root)
			done = s.retain.plan(b, root)
		}
		if err := b.Commit(ctx); errors.Is(err, tree.ErrRefMoved) {
			continue // another writer moved head: check again against the new state
		} else if err != nil {
			return pushDone{}, fmt.Errorf("push: commit: %w", err)
		}
		done()
		if s.opts.Cluster != nil {
			// The nodes are in this server's cache; the cluster makes
			// root its head, or reports the head that won the race.
			now, moved, err := s.opts.Cluster.Commit(ctx, cur, root)
			if err != nil {
				return pushDone{}, fmt.Errorf("push: cluster commit: %w", err)
			}
			if moved {
				clusterHead = now
				continue
			}
		}
		if s.afterPush != nil {
			s.afterPush(sess, root, changes, res.Overridden)
		}
		sess.publishPush(root)
		sess.mu.Lock()
		for k, h := range accepted {
			if _, ok := sess.accepted[k]; !ok {
				sess.acceptedBytes += len(k) + acceptedEntryOverhead
			}
			sess.accepted[k] = h
		}
		if len(sess.accepted) > s.opts.MaxShown || sess.acceptedBytes > maxAcceptedBytes {
			// Echo suppression would cost too much memory: forget it. The
			// client then receives its own changes back, which is harmless.
			sess.accepted = map[string]node.Hash{} // clear would keep the grown map's memory
			sess.acceptedBytes = 0
		}
		sess.mu.Unlock()
		res.Root = root
		s.stats.accepted.Add(int64(res.Accepted))
		s.stats.overridden.Add(int64(len(res.Overridden)))
		s.stats.rejected.Add(int64(len(res.Rejected)))
		if s.opts.OnCommit != nil {
			s.opts.OnCommit(time.Since(start), int(res.Accepted), len(res.Overridden)-len(res.Rejected), len(res.Rejected))
		}
		s.log.Info("arbor server: push", "client", sess.clientID, "changes", len(changes), "accepted", res.Accepted, "overridden", len(res.Overridden), "root", root.Short())
		return res, nil
	}
}

// pushStoreError reports a push the store refused to write. An address
// conflict (content whose hash is already stored with other bytes: a
// crafted hash collision) is logged loudly and sent back as a refusal.
func pushStoreError(sess *session, key []byte, err error) error {
	where := "push"
	if key != nil {
		where = fmt.Sprintf("push key %q", key)
	}
	if errors.Is(err, tree.ErrAddressConflict) {
		sess.s.log.Error("arbor server: push refused: content collides with a stored address", "client", sess.clientID, "peer", sess.peer, "err", err)
		return fmt.Errorf("%w: %s: %v; nothing of the push was stored", ErrRefused, where, err)
	}
	return fmt.Errorf("%s: store: %w", where, err)
}
