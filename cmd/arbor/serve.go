package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arbor-sync/arbor"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/ops"
	"github.com/arbor-sync/arbor/tree"
)

type serveCmd struct {
	Listen    string        `default:"127.0.0.1:4433" help:"UDP address to listen on."`
	Tokens    string        `required:"" placeholder:"FILE" help:"Tokens file: one 'TOKEN CLIENT_ID [read=P,…] [write=P,…]' per line (prefix scopes; absent: every key), '#' comments. Reread on SIGHUP."`
	CertDir   string        `placeholder:"DIR" help:"Directory of cert.pem and key.pem (default: DB/tls); a self-signed certificate is created if missing."`
	Retain    int           `default:"64" help:"Recent roots kept so returning clients get only the changes since their last sync."`
	Init      bool          `help:"Create an empty store in --db if the directory holds none (without it, serving a directory with no store is an error: a mistyped --db would otherwise serve an empty dataset)."`
	PidFile   string        `placeholder:"FILE" help:"Write the process id to FILE once listening; it is removed at exit."`
	Metrics   string        `placeholder:"ADDR" help:"Serve HTTP on this TCP address: Prometheus metrics at /metrics, liveness at /healthz, readiness at /readyz. No token: bind it to loopback or a private network."`
	Drain     time.Duration `default:"30s" help:"On SIGTERM or SIGINT, stop accepting connections and let running syncs finish for up to this long before ending them (a second signal ends them at once); then exit 0."`
	Verbose   bool          `short:"v" help:"Also log every session, sync and push (by default: warnings and errors, such as refused handshakes, revoked tokens and refused pushes, and the server's own events)."`
	LogFormat string        `enum:"text,json" default:"text" help:"Log format on standard error: text (key=value) or json (one JSON object per line, for log shippers)."`
	JSON      bool          `name:"json" help:"Print the address, root and fingerprint as one JSON line once listening."`
	clusterFlags
}

func (serveCmd) Help() string {
	return "Prints 'fingerprint: HEX' once it accepts connections; clients pin it with --fingerprint.\n" +
		"The store must exist (import records first) unless --init is given. SIGHUP rereads the tokens file;\n" +
		"SIGTERM or SIGINT drains (see --drain) and exits 0. deploy/arbor.service is a systemd unit.\n\n" +
		"Example:\n  echo 'secret-token laptop-1' > tokens\n  arbor --db server-data serve --listen 127.0.0.1:4433 --tokens tokens\n" +
		"  arbor --db server-data serve --tokens tokens --metrics 127.0.0.1:9090   # curl 127.0.0.1:9090/metrics\n\n" +
		"Cluster mode (--etcd, --s3, --bucket): the server is one of a cluster's stateless servers; --db is its\n" +
		"local cache. See 'arbor help cluster'.\n" +
		"  arbor --db cache-1 serve --tokens tokens --etcd http://127.0.0.1:2379 --s3 http://127.0.0.1:8333 --bucket arbor"
}

func (c serveCmd) Run(e *env) error {
	toks, err := arbor.LoadTokens(c.Tokens)
	if err != nil {
		return err
	}
	log, netLog := c.loggers(e.stderr)
	var metrics *ops.Metrics
	opts := arbor.ServerOptions{Tokens: toks, CertDir: c.CertDir, Retain: c.Retain, Logger: netLog}
	if c.Metrics != "" {
		metrics = ops.NewMetrics()
		opts.OnCommit = metrics.ObserveCommit
	}
	var (
		srv      *arbor.Server
		store    *tree.Store
		register func(addr string) error
	)
	storeName := e.global.DB
	var storeOpen atomic.Bool
	if c.clusterFlags.enabled() {
		if c.Init {
			return errors.New("serve --init: a cluster's server has no store of its own to create (the cluster's first server creates the cluster)")
		}
		cs, cl, err := c.serveCluster(e, opts, log)
		if err != nil {
			return err
		}
		storeOpen.Store(true)
		defer func() {
			storeOpen.Store(false)
			cl.Close()
		}()
		srv, store = cs, cl.Store()
		storeName = fmt.Sprintf("cluster %s (cache %s)", c.ClusterName, e.global.DB)
		regCtx, stopReg := context.WithCancel(context.WithoutCancel(e.ctx))
		defer stopReg()
		register = func(addr string) error {
			host, _ := os.Hostname()
			return cl.Register(regCtx, fmt.Sprintf("%s-%d", host, os.Getpid()), addr, 10*time.Second)
		}
	} else {
		db, err := e.openDB(!c.Init)
		if err != nil {
			if dir := e.global.DB; dir != "" && !c.Init && noStore(dir, err) {
				return fmt.Errorf("serve: %s holds no store: import records into it first ('arbor --db %s import FILE'), or pass --init to serve an empty store", dir, dir)
			}
			return err
		}
		storeOpen.Store(true)
		defer func() {
			storeOpen.Store(false)
			db.Close()
		}()
		if opts.CertDir == "" {
			opts.CertDir = filepath.Join(e.global.DB, "tls")
		}
		if srv, err = arbor.NewServer(db, opts); err != nil {
			return err
		}
		store = db.Store()
	}
	var httpAddr string
	if metrics != nil {
		if err := metrics.Register(srv, ops.StoreSize(store.DiskSize), ops.StorePebble(store.PebbleStats)); err != nil {
			return err
		}
		ready := func() error {
			switch {
			case !storeOpen.Load():
				return errors.New("store closed")
			case !srv.Ready():
				return errors.New("not listening (starting or draining)")
			}
			return nil
		}
		ln, err := stdnet.Listen("tcp", c.Metrics)
		if err != nil {
			return fmt.Errorf("serve --metrics: %w", err)
		}
		httpAddr = ln.Addr().String()
		hs := &http.Server{Handler: ops.Handler(metrics, ready), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			hs.Shutdown(ctx)
		}()
	}
	if err := srv.Listen(c.Listen); err != nil {
		return err
	}
	if register != nil {
		if err := register(srv.Addr().String()); err != nil {
			return err
		}
	}
	if c.PidFile != "" {
		remove, err := writePidFile(c.PidFile)
		if err != nil {
			return fmt.Errorf("serve --pid-file: %w", err)
		}
		defer remove()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }() // ends the reloader
	go func() {
		for range hup {
			toks, err := arbor.LoadTokens(c.Tokens)
			if err != nil {
				log.Error("arbor serve: tokens not reloaded; keeping the old ones", "file", c.Tokens, "err", err)
				continue
			}
			srv.SetTokens(toks)
			log.Info("arbor serve: reloaded tokens", "file", c.Tokens, "tokens", len(toks))
		}
	}()
	root, _ := store.Root(arbornet.HeadRef)
	if c.JSON {
		writeJSON(e.stdout, struct {
			Listen      string     `json:"listen"`
			Root        arbor.Hash `json:"root"`
			Fingerprint string     `json:"fingerprint"`
			Metrics     string     `json:"metrics,omitempty"`
		}{srv.Addr().String(), root, srv.Fingerprint(), metricsURL(httpAddr)})
	} else {
		fmt.Fprintf(e.stdout, "listening on %s\nroot %s\n", srv.Addr(), root)
		if httpAddr != "" {
			fmt.Fprintf(e.stdout, "metrics %s\n", metricsURL(httpAddr))
		}
		fmt.Fprintf(e.stdout, "fingerprint: %s\n", srv.Fingerprint())
	}
	if f, ok := e.stdout.(*os.File); ok {
		f.Sync()
	}
	started := []any{"addr", srv.Addr().String(), "root", root.String(), "fingerprint", srv.Fingerprint(), "store", storeName}
	if httpAddr != "" {
		started = append(started, "metrics", metricsURL(httpAddr))
	}
	log.Info("arbor serve: listening", started...)
	return c.serveUntilSignal(e.ctx, srv, log)
}

// serveUntilSignal serves until ctx ends (SIGTERM or SIGINT), then drains:
// it stops accepting connections, lets the sessions in the middle of a
// sync finish for up to --drain, and ends the rest. Sessions that only
// watch (followers, which never end by themselves) do not hold the drain
// up: they are ended once nothing else is left, and their clients
// reconnect when the server is back. A second signal ends the drain at
// once. It returns nil once the server has stopped.
func (c serveCmd) serveUntilSignal(ctx context.Context, srv *arbor.Server, log *slog.Logger) error {
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	st := srv.Stats()
	log.Info("arbor serve: shutting down: no new connections; running syncs may finish",
		"syncing", max(st.Sessions-st.Watchers, 0)+st.Handshakes, "watching", st.Watchers, "drain", c.Drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), c.Drain)
	defer cancel()
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-again:
				log.Warn("arbor serve: second signal: ending the drain now")
				cancel()
				return
			case <-dctx.Done():
				return
			case <-t.C:
				if st := srv.Stats(); st.Handshakes == 0 && st.Sessions <= st.Watchers {
					cancel() // only followers are left
					return
				}
			}
		}
	}()
	start := time.Now()
	srv.Drain(dctx)
	st = srv.Stats()
	if cut := max(st.Sessions-st.Watchers, 0) + st.Handshakes; cut > 0 {
		log.Warn("arbor serve: drain ended with syncs still running; ending them (their clients resume on their next sync)",
			"syncing", cut, "after", time.Since(start).Round(time.Millisecond).String())
	}
	stopServing()
	err := <-served
	log.Info("arbor serve: stopped", "drained_in", time.Since(start).Round(time.Millisecond).String(), "followers_disconnected", st.Watchers)
	return err
}

// loggers returns serve's own logger (Info and up: starts, reloads,
// shutdown) and the sync server's: warnings and errors by default, which
// include refused handshakes, revoked tokens, refused pushes and failed
// exchanges; with -v also every session and push (Info). Both write
// through one handler, so their lines never interleave.
func (c serveCmd) loggers(w io.Writer) (own, server *slog.Logger) {
	var h slog.Handler
	ho := &slog.HandlerOptions{Level: slog.LevelInfo}
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(w, ho)
	} else {
		h = slog.NewTextHandler(w, ho)
	}
	floor := slog.LevelWarn
	if c.Verbose {
		floor = slog.LevelInfo
	}
	return slog.New(h), slog.New(levelHandler{min: floor, Handler: h})
}

// levelHandler passes on the records of h at min or above.
type levelHandler struct {
	min slog.Level
	slog.Handler
}

func (l levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.Handler.Enabled(ctx, lv)
}

func (l levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{l.min, l.Handler.WithAttrs(as)}
}

func (l levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{l.min, l.Handler.WithGroup(name)}
}

// metricsURL is the /metrics URL of the HTTP address addr ("" for none).
func metricsURL(addr string) string {
	if addr == "" {
		return ""
	}
	return "http://" + addr + "/metrics"
}

// noStore reports whether err, from opening dir with MustExist, says that
// dir does not exist or is empty (rather than locked, or not a store).
func noStore(dir string, err error) bool {
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if !errors.Is(err, arbor.ErrNotStore) {
		return false
	}
	ents, rerr := os.ReadDir(dir)
	return rerr == nil && len(ents) == 0
}

// writePidFile writes this process's id to path (atomically: a reader
// never sees a partial file) and returns a function that removes it, if
// it still holds this id.
func writePidFile(path string) (remove func(), err error) {
	pid := strconv.Itoa(os.Getpid()) + "\n"
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(pid), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return func() {
		if b, err := os.ReadFile(path); err == nil && string(b) == pid {
			os.Remove(path)
		}
	}, nil
}
