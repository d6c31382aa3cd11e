package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/arbor-sync/arbor"
)

type demoCmd struct {
	Records int   `default:"100000" help:"Records in the generated dataset."`
	Edits   int   `default:"200" help:"Edits each client makes between syncs."`
	Seed    int64 `default:"1" help:"Seed for the dataset and the edits."`
	Keep    bool  `help:"Keep the temporary directories and print where they are."`
	JSON    bool  `name:"json" help:"Print JSON lines instead of the table: one object per sync and per check (\"type\": dataset, sync, check, summary)."`
}

func (demoCmd) Help() string {
	return "Starts a server and three clients on loopback in temporary directories, clones a generated\ndataset to each client, makes concurrent edits including conflicts, syncs, and checks that\nevery conflict went to the server and that all roots are equal. Exits 0 only if every check held.\n\nExample:\n  arbor demo\n  arbor demo --records 1000000"
}

// demoClient is one client replica in the demo and what it wrote.
type demoClient struct {
	name, token string
	db          *arbor.DB
	wrote       map[string]*string // key → value written locally (nil: deleted)
	overridden  map[string]bool
}

func (c demoCmd) Run(e *env) error {
	if c.Records < 100 {
		return errors.New("demo: --records must be at least 100")
	}
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	dir, err := os.MkdirTemp("", "arbor-demo-")
	if err != nil {
		return err
	}
	if c.Keep {
		if c.JSON {
			writeJSON(e.stdout, struct {
				Type string `json:"type"`
				Dir  string `json:"dir"`
			}{"directories_kept", dir})
		} else {
			fmt.Fprintln(e.stdout, "directories kept in", dir)
		}
	} else {
		defer os.RemoveAll(dir)
	}
	r := rand.New(rand.NewPCG(uint64(c.Seed), 42))
	out := e.stdout
	if c.JSON {
		out = io.Discard // the JSON lines are written beside the text
	}
	emit := func(v any) {
		if c.JSON {
			writeJSON(e.stdout, v)
		}
	}
	fail := 0
	check := func(ok bool, format string, args ...any) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			fail++
		}
		fmt.Fprintf(out, "  [%s] %s\n", mark, fmt.Sprintf(format, args...))
		emit(struct {
			Type string `json:"type"`
			OK   bool   `json:"ok"`
			Text string `json:"text"`
		}{"check", ok, fmt.Sprintf(format, args...)})
	}

	// The server and its dataset.
	open := func(name string) (*arbor.DB, error) {
		return arbor.Open(filepath.Join(dir, name), &arbor.Options{NoSync: true, CacheSize: 64 << 20})
	}
	srvDB, err := open("server")
	if err != nil {
		return err
	}
	defer srvDB.Close()
	start := time.Now()
	fullBytes, err := demoDataset(ctx, srvDB, c.Records, r)
	if err != nil {
		return err
	}
	root0, _ := srvDB.Root(ctx)
	fmt.Fprintf(out, "dataset: %d records, %.1f MB of keys and values, built in %s (Pebble NoSync), root %s\n",
		c.Records, float64(fullBytes)/1e6, time.Since(start).Round(time.Millisecond), root0.Short())
	emit(struct {
		Type    string     `json:"type"`
		Records int        `json:"records"`
		Bytes   int64      `json:"bytes"`
		Ms      float64    `json:"ms"`
		Root    arbor.Hash `json:"root"`
	}{"dataset", c.Records, int64(fullBytes), float64(time.Since(start).Microseconds()) / 1000, root0})

	names := []string{"alice", "bob", "carol"}
	var toks []arbor.Token
	for _, n := range names {
		toks = append(toks, arbor.Token{Token: "token-" + n, ClientID: n})
	}
	srv, err := arbor.NewServer(srvDB, arbor.ServerOptions{Tokens: toks, CertDir: filepath.Join(dir, "server-tls"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	fmt.Fprintf(out, "server on %s, fingerprint %s…\n\n", srv.Addr(), srv.Fingerprint()[:16])

	clients := make([]*demoClient, len(names))
	for i, n := range names {
		db, err := open(n)
		if err != nil {
			return err
		}
		defer db.Close()
		clients[i] = &demoClient{name: n, token: "token-" + n, db: db, wrote: map[string]*string{}, overridden: map[string]bool{}}
	}
	syncOpts := func(cl *demoClient) arbor.SyncOptions {
		return arbor.SyncOptions{Server: srv.Addr().String(), Token: cl.token, Fingerprint: srv.Fingerprint()}
	}
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sync\tclient\tpath\tpulled\tpushed\toverridden\tbytes on wire\tvs full copy\tround trips\ttime\t")
	row := func(label string, cl *demoClient, res *arbor.SyncResult) {
		wire := res.BytesSent + res.BytesReceived
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.4f×\t%d\t%s\t\n", label, cl.name, res.Path, res.Pulled, res.Pushed,
			len(res.Overridden), wire, float64(wire)/float64(fullBytes), res.RoundTrips, res.Duration.Round(100*time.Microsecond))
		emit(struct {
			Type        string  `json:"type"`
			Sync        string  `json:"sync"`
			Client      string  `json:"client"`
			Path        string  `json:"path"`
			Pulled      int     `json:"pulled"`
			Pushed      int     `json:"pushed"`
			Overridden  int     `json:"overridden"`
			BytesOnWire int64   `json:"bytes_on_wire"`
			VsFullCopy  float64 `json:"vs_full_copy"`
			RoundTrips  int     `json:"round_trips"`
			Ms          float64 `json:"ms"`
		}{"sync", label, cl.name, res.Path, res.Pulled, res.Pushed, len(res.Overridden), wire, float64(wire) / float64(fullBytes),
			res.RoundTrips, float64(res.Duration.Microseconds()) / 1000})
	}
	syncAll := func(label string) error {
		var wg sync.WaitGroup
		results := make([]*arbor.SyncResult, len(clients))
		errs := make([]error, len(clients))
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = cl.db.Sync(ctx, syncOpts(cl))
			}()
		}
		wg.Wait()
		for i, cl := range clients {
			if errs[i] != nil {
				return fmt.Errorf("%s sync of %s: %w", label, cl.name, errs[i])
			}
			row(label, cl, results[i])
			for _, o := range results[i].Overridden {
				cl.overridden[string(o.Key)] = true
			}
		}
		return nil
	}

	// 1. Clone: the first sync of an empty store.
	if err := syncAll("clone"); err != nil {
		return err
	}

	// 2. Concurrent edits. Every client edits its own keys; alice and bob
	// also edit the same contested keys; the server edits some of those too.
	keyOf := func(i int) string { return fmt.Sprintf("rec/%012d", i) }
	contested := r.Perm(c.Records)[:10]
	isContested := map[int]bool{}
	for _, i := range contested {
		isContested[i] = true
	}
	serverWins := map[string]string{}
	for _, i := range contested[:4] {
		k := keyOf(i)
		serverWins[k] = "server-" + k
		if err := srvDB.Put(ctx, []byte(k), []byte(serverWins[k])); err != nil {
			return err
		}
	}
	for ci, cl := range clients {
		b := new(arbor.Batch)
		put := func(k, v string) { b.Put([]byte(k), []byte(v)); cl.wrote[k] = &v }
		for n := 0; n < c.Edits; n++ {
			i := r.IntN(c.Records)
			for isContested[i] { // the contested keys are edited below, on purpose
				i = r.IntN(c.Records)
			}
			switch {
			case n%5 == 0: // delete
				k := keyOf(i)
				b.Delete([]byte(k))
				cl.wrote[k] = nil
			case n%5 == 1: // insert a new key
				put(fmt.Sprintf("new/%s/%06d", cl.name, n), fmt.Sprintf("inserted by %s", cl.name))
			default:
				put(keyOf(i), fmt.Sprintf("%s edit %d", cl.name, n))
			}
		}
		if ci < 2 {
			for _, i := range contested {
				put(keyOf(i), cl.name+" wants this")
			}
		}
		if err := cl.db.Apply(ctx, b); err != nil {
			return err
		}
	}
	fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t\t\t\n")
	// 3. Everyone syncs at once, then once more to pick up the others' changes.
	if err := syncAll("edits"); err != nil {
		return err
	}
	if err := syncAll("catch-up"); err != nil {
		return err
	}
	tw.Flush()

	// 4. Checks.
	fmt.Fprintln(out, "\nchecks:")
	want, _ := srvDB.Root(ctx)
	for _, cl := range clients {
		got, _ := cl.db.Root(ctx)
		check(got == want, "%s's root %s equals the server's %s", cl.name, got.Short(), want.Short())
		_, verr := cl.db.Verify(ctx)
		check(verr == nil, "%s's store verifies (every node re-hashed)", cl.name)
	}
	serverVal := func(k string) *string {
		v, err := srvDB.Get(ctx, []byte(k))
		if err != nil {
			return nil
		}
		s := string(v)
		return &s
	}
	wonByServer, lostOK := 0, true
	for k, v := range serverWins {
		got := serverVal(k)
		if got == nil || *got != v {
			lostOK = false
		}
		for _, cl := range clients[:2] {
			if !cl.overridden[k] {
				lostOK = false
			}
		}
		wonByServer++
	}
	check(lostOK, "the server's own edits of %d contested keys won, and both alice and bob were told", wonByServer)
	raced, firstWins := 0, true
	for _, i := range contested[4:] {
		k := keyOf(i)
		got := serverVal(k)
		a, b := clients[0].overridden[k], clients[1].overridden[k]
		if got == nil || a == b || (*got != "alice wants this" && *got != "bob wants this") {
			firstWins = false
		}
		raced++
	}
	check(firstWins, "%d keys both alice and bob changed: the first push won, the other was told its change was overridden", raced)
	kept := true
	for _, cl := range clients {
		for k, v := range cl.wrote {
			if _, contestedKey := serverWins[k]; contestedKey || cl.overridden[k] {
				continue
			}
			got := serverVal(k)
			if (v == nil) != (got == nil) || (v != nil && *v != *got) {
				// Another client may have written the same random key later.
				if !writtenByOther(clients, cl, k) {
					kept = false
				}
			}
		}
	}
	check(kept, "every accepted client write is on the server")
	n, _ := srvDB.Count(ctx)
	fmt.Fprintf(out, "\n%d records on every replica; %d checks failed\n", n, fail)
	emit(struct {
		Type         string `json:"type"`
		Records      uint64 `json:"records"`
		ChecksFailed int    `json:"checks_failed"`
	}{"summary", n, fail})
	if fail > 0 {
		return &exitError{code: 1, err: fmt.Errorf("demo: %d checks failed", fail)}
	}
	return nil
}

func writtenByOther(clients []*demoClient, self *demoClient, k string) bool {
	for _, cl := range clients {
		if cl != self {
			if _, ok := cl.wrote[k]; ok {
				return true
			}
		}
	}
	return false
}

// demoDataset fills db with n records of 16-byte keys and 100-byte values
// and returns the bytes of keys and values (what a full copy moves).
func demoDataset(ctx context.Context, db *arbor.DB, n int, r *rand.Rand) (int64, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("rec/%012d", i)
	}
	sort.Strings(keys)
	b, err := db.Store().NewBatch()
	if err != nil {
		return 0, err
	}
	defer b.Discard()
	bl := b.NewBuilder(ctx)
	val := make([]byte, 100)
	var total int64
	for _, k := range keys {
		for j := range val {
			val[j] = alphabet[r.IntN(len(alphabet))]
		}
		if err := bl.Add([]byte(k), val); err != nil {
			return 0, err
		}
		total += int64(len(k) + len(val))
	}
	root, err := bl.Finish()
	if err != nil {
		return 0, err
	}
	b.SetRef(arbor.HeadRef, root)
	return total, b.Commit(ctx)
}
