package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

type putCmd struct {
	Key   string `arg:"" help:"Key."`
	Value string `arg:"" help:"Value, or '-' to read it from standard input."`
}

func (putCmd) Help() string {
	return "Example:\n  arbor --db data put user/1 ada\n  cat photo.jpg | arbor --db data put photo/1 -"
}

func (c putCmd) Run(e *env) error {
	value := []byte(c.Value)
	if c.Value == "-" {
		var err error
		if value, err = io.ReadAll(e.stdin); err != nil {
			return fmt.Errorf("put %q: read standard input: %w", c.Key, err)
		}
	}
	db, err := e.openDB(false)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Put(e.ctx, []byte(c.Key), value)
}

type getCmd struct {
	Key  string `arg:"" help:"Key."`
	Raw  bool   `help:"Print the value's bytes exactly, without adding a newline."`
	JSON bool   `name:"json" help:"Print the record as one JSON line, as 'export --json' does."`
}

func (getCmd) Help() string {
	return "Example:\n  arbor --db data get user/1\n  arbor --db data get --json photo/1   # {\"key\":\"photo/1\",\"value_b64\":\"…\"} for bytes that are not UTF-8"
}

func (c getCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	v, err := db.Get(e.ctx, []byte(c.Key))
	if errors.Is(err, arbor.ErrNotFound) {
		return fmt.Errorf("key %q not found", c.Key)
	}
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, newRecordJSON([]byte(c.Key), v))
	}
	w := bufio.NewWriter(e.stdout)
	w.Write(v)
	if !c.Raw && (len(v) == 0 || v[len(v)-1] != '\n') {
		w.WriteByte('\n')
	}
	return w.Flush()
}

type delCmd struct {
	Key string `arg:"" help:"Key."`
}

func (delCmd) Help() string { return "Example:\n  arbor --db data del user/1" }

func (c delCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Delete(e.ctx, []byte(c.Key))
}

type importCmd struct {
	File   string `arg:"" help:"Input file, or '-' for standard input."`
	Format string `enum:"tsv,jsonl" default:"tsv" help:"Line format: tsv (KEY<TAB>VALUE) or jsonl (one JSON object per line: \"key\" or \"key_b64\", \"value\" or \"value_b64\"; as 'export --json' writes)."`
	JSON   bool   `name:"json" help:"Print the result as one JSON line."`
}

func (importCmd) Help() string {
	return "All records commit at once: a bad line aborts the import, names the line, and changes nothing.\n" +
		"In jsonl, text is a JSON string (\"key\", \"value\"); bytes that are not UTF-8 are base64 in\n" +
		"\"key_b64\" or \"value_b64\", so 'arbor export --json' output imports back exactly.\n\n" +
		"Example:\n  printf 'a\\t1\\nb\\t2\\n' | arbor --db data import -\n  arbor --db data import --format jsonl records.jsonl\n" +
		"  arbor --db old export --json | arbor --db new import --format jsonl -"
}

func (c importCmd) Run(e *env) error {
	in := e.stdin
	var size int64 = -1
	if c.File != "-" {
		f, err := os.Open(c.File)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		in = f
	}
	db, created, err := e.openCreating()
	if err != nil {
		return err
	}
	defer db.Close()
	if err := c.importInto(e, db, in, size); err != nil {
		if created {
			e.discardCreated(db) // a failed import into a new store leaves nothing behind
		}
		return err
	}
	return nil
}

func (c importCmd) importInto(e *env, db *arbor.DB, in io.Reader, size int64) error {
	var progress func(records, bytes int64)
	var bar *progressbar.ProgressBar
	if e.isTTY {
		bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription("importing"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		progress = func(records, bytes int64) {
			bar.Describe(fmt.Sprintf("importing %d records", records))
			bar.Set64(bytes)
		}
	}
	// Once the input is read, the import sorts and applies its last part
	// and commits, which reports no progress: a spinner with the time
	// elapsed takes over from the bar.
	stopCommit := func() {}
	if bar != nil {
		in = &eofReader{r: in, onEOF: func() {
			bar.Finish()
			stopCommit = e.spinner("input read; building the tree and committing")
		}}
	}
	start := time.Now()
	var st arbor.ImportStats
	var err error
	format := arbor.FormatTSV
	if c.Format == "jsonl" {
		format = arbor.FormatJSONL
	}
	st, err = db.Import(e.ctx, in, arbor.ImportOptions{Format: format, Progress: progress})
	stopCommit()
	if bar != nil {
		bar.Finish()
	}
	if err == nil {
		// This process ends here; see arbor.DB.Settle.
		err = e.timed("settling the store (moving the new nodes to blob files)", func() error { return db.Settle(e.ctx) })
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	rate := float64(st.Records) / el.Seconds()
	if c.JSON {
		return writeJSON(e.stdout, struct {
			Records          int64      `json:"records"`
			Root             arbor.Hash `json:"root"`
			Ms               float64    `json:"ms"`
			RecordsPerSecond float64    `json:"records_per_second"`
		}{st.Records, st.Root, float64(el.Microseconds()) / 1000, math.Round(rate)})
	}
	fmt.Fprintf(e.stdout, "imported %d records in %s (%.0f records/s)\nroot %s\n", st.Records, el.Round(time.Millisecond), rate, st.Root)
	return nil
}

// rangeFlags select keys: a prefix, a range, or both (their intersection).
type rangeFlags struct {
	Prefix string `placeholder:"P" help:"Only keys with this prefix."`
	Start  string `placeholder:"KEY" help:"Only keys ≥ KEY."`
	End    string `placeholder:"KEY" help:"Only keys < KEY."`
}

func (f rangeFlags) rng() arbor.Range {
	var r arbor.Range
	if f.Prefix != "" {
		r.Prefix = []byte(f.Prefix)
	}
	if f.Start != "" {
		r.Start = []byte(f.Start)
	}
	if f.End != "" {
		r.End = []byte(f.End)
	}
	return r
}

// isAll reports whether no flag narrows the keys.
func (f rangeFlags) isAll() bool { return f.Prefix == "" && f.Start == "" && f.End == "" }

// scope is the set of keys the flags select (empty when they select none).
func (f rangeFlags) scope() scope.Scope {
	s := scope.New(tree.Range{Start: []byte(f.Start), End: nilIfEmpty(f.End)})
	if f.Prefix != "" {
		s = s.Intersect(scope.New(tree.PrefixRange([]byte(f.Prefix))))
	}
	return s
}

func nilIfEmpty(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// listFlags are export's and scan's.
type listFlags struct {
	rangeFlags
	Limit int  `default:"0" placeholder:"N" help:"Stop after N records (0: no limit)."`
	JSON  bool `name:"json" help:"Write JSON lines instead of KEY<TAB>VALUE: {\"key\":…,\"value\":…}, with \"key_b64\"/\"value_b64\" (base64) for bytes that are not UTF-8."`
}

func exportRecords(e *env, f listFlags) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	if f.JSON {
		_, err = db.ExportJSONL(e.ctx, e.stdout, f.rng(), f.Limit)
	} else {
		_, err = db.Export(e.ctx, e.stdout, f.rng(), f.Limit)
	}
	if err != nil && !f.JSON && errors.Is(err, arbor.ErrBadInput) {
		err = fmt.Errorf("%w (arbor export --json)", err)
	}
	return err
}

type exportCmd struct {
	listFlags
}

func (exportCmd) Help() string {
	return "KEY<TAB>VALUE lines cannot carry a tab or newline; --json carries any bytes and imports back\n" +
		"with 'arbor import --format jsonl'.\n\n" +
		"Example:\n  arbor --db data export > dump.tsv\n  arbor --db data export --prefix user/ --limit 10\n  arbor --db data export --json > dump.jsonl"
}

func (c exportCmd) Run(e *env) error { return exportRecords(e, c.listFlags) }

type scanCmd struct {
	listFlags
}

func (scanCmd) Help() string { return "Example:\n  arbor --db data scan --start user/ --limit 10" }

func (c scanCmd) Run(e *env) error { return exportRecords(e, c.listFlags) }

type countCmd struct {
	rangeFlags
	JSON bool `name:"json" help:"Print as JSON: {\"count\": N}."`
}

func (countCmd) Help() string {
	return "The count comes from the subtree counts stored in the nodes: it reads the nodes along the\n" +
		"range's edges, not the records. On a partial replica it counts the records in its scope.\n\n" +
		"Example:\n  arbor --db data count\n  arbor --db data count --prefix user/\n  arbor --db data count --start a --end m"
}

func (c countCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := countRecords(e, db, c.rangeFlags)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, struct {
			Count uint64 `json:"count"`
		}{n})
	}
	fmt.Fprintln(e.stdout, n)
	return nil
}

// countRecords counts the records the flags select that the store holds
// (on a partial replica, only those in its scope).
func countRecords(e *env, db *arbor.DB, f rangeFlags) (uint64, error) {
	if f.isAll() {
		return db.Count(e.ctx)
	}
	sc, err := db.Scope()
	if err != nil {
		return 0, err
	}
	root, err := db.Root(e.ctx)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, r := range f.scope().Intersect(sc).Ranges() {
		c, err := db.Store().CountRange(e.ctx, root, r)
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// rootJSON is 'arbor root --json': the root, and the server it came from
// (of a --server list, the one that answered).
type rootJSON struct {
	Root   arbor.Hash `json:"root"`
	Server string     `json:"server,omitempty"`
}

type rootCmd struct {
	Server string `placeholder:"ADDR" help:"Print this server's root instead of the local one (an audit: one round trip). A comma-separated list of a cluster's servers asks the first that answers. With --db, the store's remembered fingerprint and token file serve for flags left out."`
	tokenFlags
	trustFlags
	Timeout time.Duration `default:"0s" help:"With --server: give up after this long (0: no limit)."`
	JSON    bool          `name:"json" help:"Print as JSON: {\"root\": …}."`
}

func (rootCmd) Help() string {
	return "Two stores hold the same records exactly when their roots are equal. With --server the token\n" +
		"comes from --token-file, ARBOR_TOKEN or --token, as for sync.\n\n" +
		"Example:\n  arbor --db data root\n  ARBOR_TOKEN=secret-token arbor root --server 127.0.0.1:4433 --fingerprint 3a7f…"
}

func (c rootCmd) Run(e *env) error {
	if c.Server != "" {
		return remoteRoot(e, c)
	}
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	r, err := db.Root(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(e.stdout, rootJSON{Root: r})
	}
	fmt.Fprintln(e.stdout, r)
	return nil
}

type verifyCmd struct {
	JSON bool `name:"json" help:"Print the report as JSON."`
}

func (verifyCmd) Help() string { return "Example:\n  arbor --db data verify" }

func (c verifyCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	var rep *arbor.VerifyReport
	desc := "verifying"
	if n, err := db.Count(e.ctx); err == nil {
		desc = fmt.Sprintf("verifying %d records", n)
	}
	verr := e.timed(desc+" (re-hashing every node)", func() (err error) {
		rep, err = db.Verify(e.ctx)
		return err
	})
	if rep == nil {
		return verr
	}
	sc, err := db.Scope()
	if err != nil {
		return err
	}
	if c.JSON {
		out := struct {
			Root     arbor.Hash `json:"root"`
			Nodes    int        `json:"nodes"`
			Blobs    int        `json:"blobs"`
			Records  uint64     `json:"records"`
			OK       bool       `json:"ok"`
			Problems []string   `json:"problems"`
			Scope    string     `json:"scope"`
		}{rep.Root, rep.Nodes, rep.Blobs, rep.Records, len(rep.Problems) == 0, []string{}, sc.String()}
		for _, p := range rep.Problems {
			out.Problems = append(out.Problems, p.String())
		}
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintln(e.stdout, "problem:", p)
		}
		if len(rep.Problems) == 0 && verr == nil && !sc.IsAll() {
			fmt.Fprintf(e.stdout, "ok: partial replica of %s verified against server root %s (%d nodes and %d value blobs in scope re-hashed up to it)\n", sc, rep.Root, rep.Nodes, rep.Blobs)
		} else if len(rep.Problems) == 0 && verr == nil {
			fmt.Fprintf(e.stdout, "ok: root %s, %d records, %d nodes and %d value blobs verified\n", rep.Root, rep.Records, rep.Nodes, rep.Blobs)
		}
	}
	return verr
}

type gcCmd struct {
	JSON bool `name:"json" help:"Print what was kept and deleted as one JSON line."`
}

func (gcCmd) Help() string { return "Example:\n  arbor --db data gc" }

func (c gcCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	before, _ := db.Store().DiskSize()
	var st arbor.GCStats
	err = e.timed("collecting garbage (marking live nodes, sweeping, compacting)", func() (err error) {
		st, err = db.GC(e.ctx)
		return err
	})
	if err != nil {
		return err
	}
	after, _ := db.Store().DiskSize()
	if c.JSON {
		return writeJSON(e.stdout, struct {
			Roots           int    `json:"roots"`
			LiveNodes       int    `json:"live_nodes"`
			LiveBlobs       int    `json:"live_blobs"`
			DeletedNodes    int    `json:"deleted_nodes"`
			DeletedBlobs    int    `json:"deleted_blobs"`
			DeletedBytes    int64  `json:"deleted_bytes"`
			DiskBytesBefore uint64 `json:"disk_bytes_before"`
			DiskBytesAfter  uint64 `json:"disk_bytes_after"`
		}{st.Roots, st.LiveNodes, st.LiveBlobs, st.DeletedNodes, st.DeletedBlobs, st.DeletedBytes, before, after})
	}
	fmt.Fprintf(e.stdout, "kept %d nodes and %d blobs from %d roots; deleted %d nodes and %d blobs (%d bytes); disk %d → %d bytes\n",
		st.LiveNodes, st.LiveBlobs, st.Roots, st.DeletedNodes, st.DeletedBlobs, st.DeletedBytes, before, after)
	return nil
}
