package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/arbor-sync/arbor"
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
	Key string `arg:"" help:"Key."`
	Raw bool   `help:"Print the value's bytes exactly, without adding a newline."`
}

func (getCmd) Help() string { return "Example:\n  arbor --db data get user/1" }

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
	Format string `enum:"tsv,jsonl" default:"tsv" help:"Line format: tsv (KEY<TAB>VALUE) or jsonl ({\"key\":…,\"value\":…})."`
}

func (importCmd) Help() string {
	return "All records commit at once: a bad line aborts the import, names the line, and changes nothing.\n\nExample:\n  printf 'a\\t1\\nb\\t2\\n' | arbor --db data import -\n  arbor --db data import --format jsonl records.jsonl"
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
	db, err := e.openDB(false)
	if err != nil {
		return err
	}
	defer db.Close()
	opts := arbor.ImportOptions{Format: arbor.ImportFormat(c.Format)}
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
		opts.Progress = func(records, bytes int64) {
			bar.Describe(fmt.Sprintf("importing %d records", records))
			bar.Set64(bytes)
		}
	}
	start := time.Now()
	st, err := db.Import(e.ctx, in, opts)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(e.stdout, "imported %d records in %s (%.0f records/s)\nroot %s\n", st.Records, el.Round(time.Millisecond), float64(st.Records)/el.Seconds(), st.Root)
	return nil
}

type rangeFlags struct {
	Prefix string `help:"Only keys with this prefix."`
	Start  string `help:"Only keys ≥ START."`
	End    string `help:"Only keys < END."`
	JSON   bool   `name:"json" help:"Write JSON lines instead of KEY<TAB>VALUE."`
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

func exportRecords(e *env, f rangeFlags, limit int) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	if f.JSON {
		_, err = db.ExportJSONL(e.ctx, e.stdout, f.rng(), limit)
	} else {
		_, err = db.Export(e.ctx, e.stdout, f.rng(), limit)
	}
	return err
}

type exportCmd struct {
	rangeFlags
}

func (exportCmd) Help() string {
	return "Example:\n  arbor --db data export > dump.tsv\n  arbor --db data export --prefix user/ --json"
}

func (c exportCmd) Run(e *env) error { return exportRecords(e, c.rangeFlags, 0) }

type scanCmd struct {
	rangeFlags
	Limit int `default:"0" help:"Stop after N records (0: no limit)."`
}

func (scanCmd) Help() string { return "Example:\n  arbor --db data scan --start user/ --limit 10" }

func (c scanCmd) Run(e *env) error { return exportRecords(e, c.rangeFlags, c.Limit) }

type countCmd struct{}

func (countCmd) Help() string {
	return "The count comes from the root's subtree counts: one node read.\n\nExample:\n  arbor --db data count"
}

func (countCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.Count(e.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, n)
	return nil
}

type rootCmd struct {
	Server      string `placeholder:"ADDR" help:"Print this server's root instead of the local one (an audit: one round trip)."`
	Token       string `env:"ARBOR_TOKEN" help:"Client token, with --server."`
	Fingerprint string `placeholder:"HEX" help:"The server's certificate fingerprint, with --server."`
	Trust       bool   `help:"Trust an unknown server, with --server."`
	CA          string `name:"ca" placeholder:"FILE" help:"CA file to verify the server, with --server."`
}

func (rootCmd) Help() string {
	return "Two stores hold the same records exactly when their roots are equal.\n\nExample:\n  arbor --db data root\n  arbor root --server 127.0.0.1:4433 --token secret-token --fingerprint 3a7f…"
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
	rep, verr := db.Verify(e.ctx)
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
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
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

type gcCmd struct{}

func (gcCmd) Help() string { return "Example:\n  arbor --db data gc" }

func (gcCmd) Run(e *env) error {
	db, err := e.openDB(true)
	if err != nil {
		return err
	}
	defer db.Close()
	before, _ := db.Store().DiskSize()
	st, err := db.GC(e.ctx)
	if err != nil {
		return err
	}
	after, _ := db.Store().DiskSize()
	fmt.Fprintf(e.stdout, "kept %d nodes and %d blobs from %d roots; deleted %d nodes and %d blobs (%d bytes); disk %d → %d bytes\n",
		st.LiveNodes, st.LiveBlobs, st.Roots, st.DeletedNodes, st.DeletedBlobs, st.DeletedBytes, before, after)
	return nil
}
