package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/schollz/progressbar/v3"
)

type syncCmd struct {
	Server string `placeholder:"ADDR" help:"Server address, host:port; or the servers of one cluster (one certificate), comma-separated: tried in order, a sync fails over to the next when one cannot be reached or dies midway. Remembered, with the token file, after a successful sync: later syncs need neither."`
	tokenFlags
	trustFlags
	Walk              bool          `help:"Walk the server's tree instead of asking for changes since the last sync (a full audit and repair)."`
	Prefix            []string      `placeholder:"P" help:"Sync only keys with this prefix (repeatable; with --start/--end, the union). Remembered; a wider scope later fetches only the added part."`
	Start             *string       `placeholder:"KEY" help:"Sync only keys ≥ KEY (with --end: the range [start, end))."`
	End               *string       `placeholder:"KEY" help:"Sync only keys < KEY."`
	JSON              bool          `name:"json" help:"Print the result as one JSON line (with --watch, one line per sync)."`
	Timeout           time.Duration `default:"0s" help:"Give up after this long (0: no limit)."`
	IOTimeout         time.Duration `name:"io-timeout" default:"0s" placeholder:"D" help:"How long a server may stay silent in the middle of a sync before it counts as lost (the sync then fails over to the next --server, or fails). A server killed without closing its connection is noticed only after this. 0: 30s (with --watch, 10s)."`
	Watch             bool          `help:"Keep running: sync again each time the server announces a change, until interrupted (a live mirror). Lost connections are retried."`
	Adopt             bool          `help:"For a store that holds records but has never synced with this server: take the server's state; the local records it drops or replaces are listed."`
	Merge             bool          `help:"For a store that holds records but has never synced with this server: push every local record as a new write (the server's value wins where it has one)."`
	DiscardUnpushable bool          `help:"Drop, and list, the local changes the token may not write, instead of failing the sync."`
}

func (syncCmd) Help() string {
	return "Pushes local changes (the server's value wins conflicts; overridden changes are listed), then pulls\n" +
		"everything else. The first sync of an empty store is a clone. With --watch it keeps the store in step\n" +
		"with the server until interrupted.\n\n" +
		"The token comes from --token-file, the ARBOR_TOKEN environment variable, or --token (which other\n" +
		"users of the machine can read in the process list). After a successful sync the store remembers\n" +
		"the server's address, its fingerprint and the token file (never the token itself), so a plain\n" +
		"'arbor --db laptop sync' syncs again.\n\n" +
		"--server takes one address or a comma-separated list of the servers of one cluster (servers of\n" +
		"one dataset and one certificate, so one fingerprint pins them all). They are tried in order; when\n" +
		"a server cannot be reached or dies during the sync, the sync goes on with the next (a warning on\n" +
		"standard error names it), resuming with what it already fetched; a refused token or certificate\n" +
		"is not retried. --json reports the server that completed the sync and the failovers.\n\n" +
		"Example:\n" +
		"  arbor --db laptop sync --server 127.0.0.1:4433 --token-file laptop.token --fingerprint 3a7f…\n" +
		"  arbor --db laptop sync\n" +
		"  arbor --db laptop sync --server a.example:4433,b.example:4433,c.example:4433\n" +
		"  arbor --db mirror sync --watch --server 127.0.0.1:4433 --token-file token --fingerprint 3a7f…"
}

// clientOptions resolves the flags, and what db remembers for those left
// out; tokenFile is the file the token came from, if any.
func (c syncCmd) clientOptions(e *env, db *arbor.DB) (opts arbor.SyncOptions, tokenFile string, err error) {
	opts, tokenFile, err = clientOptions(c.Server, c.tokenFlags, c.trustFlags, recall(db))
	opts.Logger = clientLogger(e.stderr)
	opts.ForceWalk = c.Walk
	if c.IOTimeout < 0 {
		return opts, tokenFile, fmt.Errorf("--io-timeout %s: want a positive duration, or 0 for the default", c.IOTimeout)
	}
	opts.IOTimeout = c.IOTimeout
	opts.Scope = c.scope()
	opts.Adopt, opts.Merge, opts.DiscardUnpushable = c.Adopt, c.Merge, c.DiscardUnpushable
	return opts, tokenFile, err
}

// scope is the union of the --prefix flags and the --start/--end range;
// the zero Scope (the stored one) when none is given.
func (c syncCmd) scope() scope.Scope {
	var rs []tree.Range
	for _, p := range c.Prefix {
		rs = append(rs, tree.PrefixRange([]byte(p)))
	}
	if c.Start != nil || c.End != nil {
		var r tree.Range
		if c.Start != nil {
			r.Start = []byte(*c.Start)
		}
		if c.End != nil {
			r.End = []byte(*c.End)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return scope.Scope{}
	}
	return scope.New(rs...)
}

func (c syncCmd) Run(e *env) error {
	if c.Adopt && c.Merge {
		return errors.New("sync: --adopt and --merge exclude each other: choose one")
	}
	if sc := c.scope(); sc.Ranges() != nil && sc.IsEmpty() {
		return fmt.Errorf("sync: the scope given by --prefix/--start/--end holds no key")
	}
	db, created, err := e.openCreating()
	if err != nil {
		return err
	}
	defer db.Close()
	err = c.run(e, db)
	if created {
		// A store this command made that never completed a sync (a
		// wrong token, an unreachable server) is not left behind.
		if st, serr := db.Status(e.ctx); err != nil || serr != nil || !st.Synced {
			e.discardCreated(db)
		}
	}
	return err
}

func (c syncCmd) run(e *env, db *arbor.DB) error {
	opts, tokenFile, err := c.clientOptions(e, db)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	ctx := e.ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	// After a successful sync the store remembers the server and the
	// token file.
	rememberServer := func() {
		servers := opts.ServerList()
		changed, err := remember(ctx, db, servers, tokenFile)
		if err != nil {
			fmt.Fprintf(e.stderr, "arbor: sync: could not remember the server: %v\n", err)
		} else if changed && !c.JSON {
			if tokenFile != "" || recall(db).tokenFile != "" {
				fmt.Fprintf(e.stderr, "remembered server %s%s: 'arbor --db %s sync' syncs again\n", joinServers(servers), tokenFileNote(tokenFile), e.global.DB)
			} else {
				fmt.Fprintf(e.stderr, "remembered server %s: 'arbor --db %s sync' syncs again, given the token (ARBOR_TOKEN; or sync once with --token-file, which is remembered)\n", joinServers(servers), e.global.DB)
			}
		}
	}
	if c.Watch {
		return c.follow(ctx, e, db, opts, rememberServer)
	}
	var bar *progressbar.ProgressBar
	if e.isTTY && !c.JSON {
		// A walk knows its exact total from the server root's subtree
		// count: the bar counts records, with a rate and an ETA. Other
		// phases only report what has moved so far.
		bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription("syncing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("records"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		opts.Progress = func(p arbor.SyncProgress) {
			if p.Total > 0 && bar.GetMax64() != p.Total {
				bar.ChangeMax64(p.Total)
			}
			bar.Describe(fmt.Sprintf("%s: %d nodes, %.1f MB in", p.Phase, p.Nodes, float64(p.BytesReceived)/1e6))
			bar.Set64(p.Records)
		}
	}
	res, err := db.Sync(ctx, opts)
	if bar != nil {
		bar.Finish()
	}
	if res == nil {
		return err
	}
	if err == nil && !res.Scope.IsAll() {
		// A partial replica proves its records are exactly the server's
		// in scope, by hashes up to the server's root.
		if _, verr := db.Verify(ctx); verr != nil {
			err = fmt.Errorf("sync: partial replica does not verify: %w", verr)
		}
	}
	if err == nil {
		// This process ends here: settle a clone now rather than leave
		// it to the next open.
		err = db.Settle(ctx)
	}
	if err == nil {
		rememberServer()
	}
	if c.JSON {
		out := syncJSON(res)
		if err != nil {
			out.Error = err.Error()
		}
		if eerr := writeJSON(e.stdout, out); eerr != nil {
			return eerr
		}
		return err
	}
	printSync(e, res)
	return err
}

// follow runs 'arbor sync --watch' (see follower): every sync's result is
// printed as it happens, and on standard error when the connection is
// lost, when it is back and when the token is refused; an interrupt ends
// it cleanly.
func (c syncCmd) follow(ctx context.Context, e *env, db *arbor.DB, opts arbor.SyncOptions, onFirstSync func()) error {
	f := &follower{db: db, opts: opts, onFirstSync: onFirstSync,
		minBackoff: 500 * time.Millisecond, maxBackoff: 30 * time.Second,
		out: func(format string, args ...any) { fmt.Fprintf(e.stderr, format+"\n", args...) }}
	report := func(res *arbor.SyncResult, err error) {
		if c.JSON {
			out := syncOut{Overridden: []overriddenJSON{}, Discarded: []overriddenJSON{}}
			if res != nil {
				out = syncJSON(res)
			}
			if err != nil {
				out.Error = err.Error()
			}
			writeJSON(e.stdout, out) // one line per sync
			return
		}
		if err == nil {
			printSync(e, res)
		}
	}
	f.out("following %s; interrupt to stop", joinServers(opts.ServerList()))
	err := f.run(ctx, report)
	good, failed := f.counts()
	if failed > 0 {
		f.out("stopped after %d syncs (%d more failed)", good, failed)
	} else {
		f.out("stopped after %d syncs", good)
	}
	return err
}

type syncOut struct {
	Client        string           `json:"client"`
	Path          string           `json:"path"`
	Pulled        int              `json:"pulled"`
	Pushed        int              `json:"pushed"`
	Accepted      int              `json:"accepted"`
	Overridden    []overriddenJSON `json:"overridden"`
	Discarded     []overriddenJSON `json:"discarded"`
	BytesSent     int64            `json:"bytes_sent"`
	BytesReceived int64            `json:"bytes_received"`
	RoundTrips    int              `json:"round_trips"`
	Nodes         int              `json:"nodes_fetched"`
	Millis        float64          `json:"ms"`
	Root          arbor.Hash       `json:"root"`
	Scope         string           `json:"scope"`
	Server        string           `json:"server"`    // the server that completed the sync
	Failovers     int              `json:"failovers"` // how often it moved to the next server
	Error         string           `json:"error,omitempty"`
}

// overriddenJSON is one overridden or rejected change. A value that is
// null was a delete; a value that is not UTF-8 comes as local_b64 or
// server_b64 instead (see records.go).
type overriddenJSON struct {
	Key       *string         `json:"key,omitempty"`
	KeyB64    *string         `json:"key_b64,omitempty"`
	Local     json.RawMessage `json:"local,omitempty"`
	LocalB64  *string         `json:"local_b64,omitempty"`
	Server    json.RawMessage `json:"server,omitempty"`
	ServerB64 *string         `json:"server_b64,omitempty"`
	Reason    string          `json:"reason,omitempty"`
}

// optJSON encodes a value that may be absent (nil: deleted) as a JSON
// string or null, or, when it is not UTF-8, as base64 in the second result.
func optJSON(b *[]byte) (json.RawMessage, *string) {
	if b == nil {
		return json.RawMessage("null"), nil
	}
	text, b64 := textOrB64(*b)
	if b64 != nil {
		return nil, b64
	}
	raw, _ := json.Marshal(*text)
	return raw, nil
}

func overriddenList(os []arbor.Overridden) []overriddenJSON {
	out := []overriddenJSON{}
	for _, o := range os {
		oj := overriddenJSON{Reason: o.Reason}
		oj.Key, oj.KeyB64 = textOrB64(o.Key)
		oj.Local, oj.LocalB64 = optJSON(o.Local)
		oj.Server, oj.ServerB64 = optJSON(o.Server)
		out = append(out, oj)
	}
	return out
}

func syncJSON(r *arbor.SyncResult) syncOut {
	out := syncOut{Client: r.ClientID, Path: r.Path, Pulled: r.Pulled, Pushed: r.Pushed, Accepted: r.Accepted,
		BytesSent: r.BytesSent, BytesReceived: r.BytesReceived, RoundTrips: r.RoundTrips,
		Nodes: r.NodesFetched, Millis: float64(r.Duration.Microseconds()) / 1000, Root: r.Root, Scope: r.Scope.String(),
		Server: r.Server, Failovers: r.Failovers}
	out.Overridden = overriddenList(r.Overridden)
	out.Discarded = overriddenList(r.Discarded)
	return out
}

func printSync(e *env, r *arbor.SyncResult) {
	discarded := ""
	if len(r.Discarded) > 0 {
		discarded = fmt.Sprintf(", %d local changes discarded", len(r.Discarded))
	}
	fmt.Fprintf(e.stdout, "synced as %s via %s: pulled %d, pushed %d (accepted %d, overridden %d)%s\n",
		r.ClientID, r.Path, r.Pulled, r.Pushed, r.Accepted, len(r.Overridden), discarded)
	if !r.Scope.IsAll() {
		fmt.Fprintf(e.stdout, "scope: %s (partial replica, verified against the server's root)\n", r.Scope)
	}
	if r.Failovers > 0 {
		fmt.Fprintf(e.stdout, "server: %s, after %d failovers\n", r.Server, r.Failovers)
	}
	for _, o := range r.Overridden {
		if o.Reason != "" {
			fmt.Fprintf(e.stdout, "  rejected %s: %s; server's %s\n", quote(o.Key), o.Reason, showOpt(o.Server))
			continue
		}
		fmt.Fprintf(e.stdout, "  overridden %s: yours %s, server's %s\n", quote(o.Key), showOpt(o.Local), showOpt(o.Server))
	}
	for _, o := range r.Discarded {
		if o.Server != nil {
			fmt.Fprintf(e.stdout, "  discarded %s: yours %s, server's %s (%s)\n", quote(o.Key), showOpt(o.Local), showOpt(o.Server), o.Reason)
		} else {
			fmt.Fprintf(e.stdout, "  discarded %s: yours %s (%s)\n", quote(o.Key), showOpt(o.Local), o.Reason)
		}
	}
	fmt.Fprintf(e.stdout, "wire: %d bytes sent, %d received, %d round trips, %d nodes fetched, %s\nroot %s\n",
		r.BytesSent, r.BytesReceived, r.RoundTrips, r.NodesFetched, r.Duration.Round(time.Millisecond), r.Root)
}

func showOpt(b *[]byte) string {
	if b == nil {
		return "(deleted)"
	}
	return quote(*b)
}

// remoteRoot implements 'arbor root --server': the server's root, for audits.
func remoteRoot(e *env, c rootCmd) error {
	// With --db, the store's pin and token file serve for the flags left
	// out.
	var rem remembered
	needPin := c.Fingerprint == "" && c.CA == "" && !c.Trust
	needToken := c.Token == "" && c.TokenFile == "" && strings.TrimSpace(os.Getenv("ARBOR_TOKEN")) == ""
	if e.global.DB != "" && (needPin || needToken) {
		db, err := e.openDB(true)
		if err != nil {
			return fmt.Errorf("root --server: %w", err)
		}
		rem = recall(db)
		db.Close()
	}
	rem.server = ""
	opts, _, err := clientOptions(c.Server, c.tokenFlags, c.trustFlags, rem)
	if err != nil {
		return fmt.Errorf("root --server: %w", err)
	}
	opts.Logger = clientLogger(e.stderr)
	ctx := e.ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	h, server, err := arbor.ServerRootFrom(ctx, opts)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, rootJSON{Root: h, Server: server})
	}
	fmt.Fprintln(e.stdout, h)
	return nil
}

// clientLogger writes a client's warnings (a failover to the next server,
// say) to w, without timestamps.
func clientLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
}

// tokenFileNote is ", token file PATH" for a token read from a file.
func tokenFileNote(file string) string {
	if file == "" {
		return ""
	}
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	return ", token file " + file
}
