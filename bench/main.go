// Command bench is Arbor's benchmark harness: it measures Arbor side by side
// with the baselines a user would otherwise pick, in the same run, and
// writes a Markdown report, a JSON file and SVG plots.
//
// Usage:
//
//	go run ./bench -out DIR            # quick suite (n = 10^5; under 2 minutes on 2 cores)
//	go run ./bench -suite full -out DIR # up to n = 10^7
//
// Every figure works on the workload W(n, d): n records with 16-byte keys and
// pseudo-random values (100 bytes by default) from a fixed seed; two replicas
// start identical, then d records change on one side (60% updates, 20%
// inserts, 20% deletes), scattered over the key space or, with -clustered,
// in one key range. Each figure is the median of -runs runs; every
// comparison (Arbor against raw Pebble, Arbor sync against a full copy or
// rsync) is measured in the same run, alternating which goes first.
//
// Sections:
//   - store: bulk build, random batched updates and point Gets, each as a
//     ratio to raw Pebble on the same records, and stored bytes per record;
//   - diff: time and nodes loaded by diff.Diff for W(n, d), against a full
//     scan of both trees;
//   - sync: Arbor's QUIC sync (retained-base path and walk path) and initial
//     clone, against a raw quic-go stream of the same bytes, a full copy over
//     TCP and rsync of a sorted dump (skipped, and said so, when the rsync
//     binary is not installed: apt-get install -y rsync), on loopback and
//     through the link emulator in bench/linkemu (profiles lan, wan, lossy);
//   - scaling: the same sync for growing n at fixed d, and for d across four
//     decades at fixed n.
//
// A section whose package has not landed, or whose tool is missing, is
// reported as skipped with the reason; the harness never prints a figure it
// did not measure. The output directory receives report.md (also printed),
// report.json (printed instead with -json) and the plots as *.svg.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arbor-sync/arbor/bench/linkemu"
)

// Config is the harness configuration, from flags.
type Config struct {
	Suite     string `json:"suite"`
	Out       string `json:"out"`
	Runs      int    `json:"runs"`
	Seed      uint64 `json:"seed"`
	ValueSize int    `json:"value_size"`
	Sync      bool   `json:"sync"`
	Clustered bool   `json:"clustered"`
	Sections  string `json:"sections"`
	TmpDir    string `json:"-"`

	// StoreN are the record counts of the store section.
	StoreN []int `json:"store_n"`
	// DiffN and DiffD are the diff section's workloads: every d at each n.
	DiffN []int `json:"diff_n"`
	DiffD []int `json:"diff_d"`
	// SyncN and SyncD are the sync section's workloads, run on every
	// profile in Profiles; the initial clone runs at the first d.
	SyncN    int               `json:"sync_n"`
	SyncD    []int             `json:"sync_d"`
	Profiles []linkemu.Profile `json:"profiles"`
	// ScaleN at ScaleD, and ScaleD2 at ScaleN2, are the scaling series, on
	// the loopback profile.
	ScaleN  []int `json:"scale_n"`
	ScaleD  int   `json:"scale_d"`
	ScaleD2 []int `json:"scale_d2"`
	ScaleN2 int   `json:"scale_n2"`
	// CloneMaxN is the largest n of the n-scaling series that also runs
	// the initial clone and the raw quic-go stream.
	CloneMaxN int `json:"clone_max_n"`
	// NoCloneOn names the profiles where the initial clone and the raw
	// quic-go stream do not run (reported as skipped).
	NoCloneOn []string `json:"no_clone_on,omitempty"`
	// PlacementD is the d at ScaleN2 also run with the other placement
	// (clustered instead of scattered); 0 skips it.
	PlacementD int `json:"placement_d"`
	// Retain is how many recent heads the sync section's server keeps for
	// retained-base syncs; 0 means 8.
	Retain int `json:"retain,omitempty"`
}

// Results is everything one harness run measured; it is also the JSON
// output.
type Results struct {
	Started time.Time      `json:"started"`
	Elapsed float64        `json:"elapsed_s"`
	Machine Machine        `json:"machine"`
	Config  Config         `json:"config"`
	Store   []*StoreResult `json:"store,omitempty"`
	Diff    []*DiffResult  `json:"diff,omitempty"`
	// Sync holds one case per profile and d.
	Sync []*SyncCase `json:"sync,omitempty"`
	// ScaleN is the sync for growing n at fixed d; ScaleD for growing d at
	// fixed n; both on the loopback profile.
	ScaleN []*SyncCase `json:"scale_n,omitempty"`
	ScaleD []*SyncCase `json:"scale_d,omitempty"`
	// Placement compares scattered and clustered changes for one W(n, d).
	Placement []*SyncCase `json:"placement,omitempty"`
	// Skipped lists every section or baseline that did not run, and why.
	Skipped []string `json:"skipped,omitempty"`
	// Plots lists the SVG files written next to the report.
	Plots []string `json:"plots,omitempty"`
}

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.Suite, "suite", "quick", "quick or full")
	flag.StringVar(&cfg.Out, "out", "bench-out", "directory for report.md, report.json and the plots")
	flag.IntVar(&cfg.Runs, "runs", 0, "runs per figure (default 3 quick, 5 full)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "workload seed")
	flag.IntVar(&cfg.ValueSize, "value-size", 100, "value size in bytes")
	flag.BoolVar(&cfg.Sync, "sync", false, "fsync every commit (default NoSync, stated beside every write figure)")
	flag.BoolVar(&cfg.Clustered, "clustered", false, "put the d changes in one key range instead of scattering them")
	flag.StringVar(&cfg.Sections, "sections", "all", "comma-separated sections to run: store,diff,sync,scaling or all")
	var o Overrides
	flag.IntVar(&o.StoreN, "n", 0, "override the record count of the store and diff sections")
	flag.IntVar(&o.SyncN, "sync-n", 0, "override the record count of the sync section")
	flag.StringVar(&o.SyncD, "sync-d", "", "override the sync section's d values, comma-separated")
	flag.StringVar(&o.Profiles, "profiles", "", "link profiles of the sync section, comma-separated (default loopback,lan,wan,lossy)")
	jsonOut := flag.Bool("json", false, "print the JSON results instead of the Markdown report")
	replot := flag.String("replot", "", "redraw the plots from an earlier run's report.json into -out, measuring nothing")
	flag.Parse()
	if *replot != "" {
		if err := replotFrom(*replot, cfg.Out); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := cfg.defaults(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := Run(ctx, &cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	plots, err := writePlots(res, cfg.Out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	res.Plots = plots
	md := Markdown(res)
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.md"), []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.json"), append(js, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if *jsonOut {
		fmt.Println(string(js))
	} else {
		fmt.Print(md)
	}
}

// replotFrom redraws the plots of the results stored in a report.json.
func replotFrom(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("replot %s: %w", path, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	plots, err := writePlots(&res, out)
	if err != nil {
		return fmt.Errorf("replot %s: %w", path, err)
	}
	fmt.Println("wrote", strings.Join(plots, ", "), "in", out)
	return nil
}

// Overrides are the flags that replace a suite's sizes; zero values keep them.
type Overrides struct {
	StoreN   int
	SyncN    int
	SyncD    string
	Profiles string
}

// defaults fills in the suite's sizes, then applies o.
func (c *Config) defaults(o Overrides) error {
	switch c.Suite {
	case "quick":
		if c.Runs == 0 {
			c.Runs = 3
		}
		c.StoreN = []int{100_000}
		c.DiffN, c.DiffD = []int{100_000}, []int{10, 100, 1000, 10_000}
		c.SyncN, c.SyncD = 10_000, []int{100}
		c.ScaleN, c.ScaleD = []int{10_000, 100_000, 1_000_000}, 100
		c.ScaleN2, c.ScaleD2 = 100_000, []int{10, 100, 1000, 10_000}
		c.PlacementD = 1000
		c.NoCloneOn = []string{linkemu.Lossy.Name}
		c.CloneMaxN = 100_000
	case "full":
		if c.Runs == 0 {
			c.Runs = 5
		}
		c.StoreN = []int{100_000, 1_000_000, 10_000_000}
		c.DiffN, c.DiffD = []int{1_000_000, 10_000_000}, []int{10, 100, 1000, 10_000}
		c.SyncN, c.SyncD = 100_000, []int{100, 1000}
		c.ScaleN, c.ScaleD = []int{10_000, 100_000, 1_000_000, 10_000_000}, 100
		c.ScaleN2, c.ScaleD2 = 1_000_000, []int{10, 100, 1000, 10_000}
		c.PlacementD = 1000
		c.CloneMaxN = 1_000_000
	case "test":
		// The harness test: the smallest workload, end to end.
		if c.Runs == 0 {
			c.Runs = 1
		}
		c.StoreN = []int{5_000}
		c.DiffN, c.DiffD = []int{5_000}, []int{5, 50}
		c.SyncN, c.SyncD = 2_000, []int{20}
		c.ScaleN, c.ScaleD = []int{1_000, 2_000}, 10
		c.ScaleN2, c.ScaleD2 = 2_000, []int{2, 20}
		c.PlacementD = 20
		c.CloneMaxN = 2_000
	default:
		return fmt.Errorf("unknown suite %q (want quick or full)", c.Suite)
	}
	if o.StoreN > 0 {
		c.StoreN, c.DiffN = []int{o.StoreN}, []int{o.StoreN}
	}
	if o.SyncN > 0 {
		c.SyncN = o.SyncN
	}
	if o.SyncD != "" {
		c.SyncD = nil
		for _, f := range strings.Split(o.SyncD, ",") {
			d, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || d < 1 {
				return fmt.Errorf("-sync-d: bad value %q", f)
			}
			c.SyncD = append(c.SyncD, d)
		}
	}
	for _, d := range c.SyncD {
		if d > c.SyncN {
			return fmt.Errorf("sync section: d = %d exceeds n = %d", d, c.SyncN)
		}
	}
	all := []linkemu.Profile{Loopback, linkemu.LAN, linkemu.WAN, linkemu.Lossy}
	c.Profiles = all
	if o.Profiles != "" {
		c.Profiles = nil
		for _, name := range strings.Split(o.Profiles, ",") {
			i := slices.IndexFunc(all, func(p linkemu.Profile) bool { return p.Name == strings.TrimSpace(name) })
			if i < 0 {
				return fmt.Errorf("-profiles: unknown profile %q (want loopback, lan, wan or lossy)", name)
			}
			c.Profiles = append(c.Profiles, all[i])
		}
	}
	if c.Runs < 1 || c.ValueSize < 1 {
		return fmt.Errorf("runs and value size must be positive")
	}
	return nil
}

func (c *Config) want(section string) bool {
	if c.Sections == "all" || c.Sections == "" {
		return true
	}
	for _, s := range strings.Split(c.Sections, ",") {
		if strings.TrimSpace(s) == section {
			return true
		}
	}
	return false
}

// runSync builds the environment for W(n, d) once and measures systems on
// every profile.
func runSync(ctx context.Context, cfg *Config, n, d int, clustered bool, profiles []linkemu.Profile, systems []string, baselines bool, logf func(string, ...any)) ([]*SyncCase, error) {
	w, err := NewWorkload(n, d, cfg.ValueSize, cfg.Seed, clustered)
	if err != nil {
		return nil, err
	}
	logf("sync: W(%d, %d): building server and client stores", n, d)
	env, err := newSyncEnv(ctx, cfg, w, baselines)
	if err != nil {
		return nil, fmt.Errorf("sync W(%d, %d): %w", n, d, err)
	}
	defer env.Close()
	var out []*SyncCase
	for _, p := range profiles {
		logf("sync: W(%d, %d) on %s", n, d, p.Name)
		c, err := env.runCase(ctx, cfg, p, systems, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// Run runs the configured sections and returns what they measured. Progress
// goes to log.
func Run(ctx context.Context, cfg *Config, log io.Writer) (*Results, error) {
	res := &Results{Started: time.Now().UTC(), Machine: detectMachine(), Config: *cfg}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	tmp, err := os.MkdirTemp(cfg.TmpDir, "arbor-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg.TmpDir = tmp
	// quic-go warns on stderr when the kernel caps UDP buffers below what it
	// asks for; the report states the caps instead.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	start := time.Now()
	logf := func(format string, args ...any) {
		if log != nil {
			fmt.Fprintf(log, "[%6.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
		}
	}
	if cfg.want("store") {
		for _, n := range cfg.StoreN {
			logf("store: n=%d", n)
			r, err := runStore(ctx, cfg, n)
			if err != nil {
				return nil, fmt.Errorf("store n=%d: %w", n, err)
			}
			res.Store = append(res.Store, r)
		}
	}
	if cfg.want("diff") {
		for _, n := range cfg.DiffN {
			for _, d := range cfg.DiffD {
				if d > n {
					continue
				}
				logf("diff: W(%d, %d)", n, d)
				r, err := runDiff(ctx, cfg, n, d)
				if err != nil {
					return nil, fmt.Errorf("diff W(%d, %d): %w", n, d, err)
				}
				res.Diff = append(res.Diff, r)
			}
		}
	}
	if cfg.want("sync") {
		for i, d := range cfg.SyncD {
			systems := []string{sysRetained, sysWalk, sysPush, sysFullCopy, sysRsync}
			if i == 0 {
				systems = append(systems, sysClone, sysRawQUIC)
			}
			cs, err := runSync(ctx, cfg, cfg.SyncN, d, cfg.Clustered, cfg.Profiles, systems, true, logf)
			if err != nil {
				return nil, err
			}
			res.Sync = append(res.Sync, cs...)
		}
	}
	if cfg.want("scaling") {
		for _, n := range cfg.ScaleN {
			systems := []string{sysRetained, sysWalk, sysFullCopy}
			big := n >= 10_000_000 // the baselines' in-memory dumps would not fit
			if big {
				systems = systems[:2]
			} else if n <= cfg.CloneMaxN {
				systems = append(systems, sysClone, sysRawQUIC)
			}
			cs, err := runSync(ctx, cfg, n, min(cfg.ScaleD, n), cfg.Clustered, []linkemu.Profile{Loopback}, systems, !big, logf)
			if err != nil {
				return nil, err
			}
			res.ScaleN = append(res.ScaleN, cs...)
		}
		for _, d := range cfg.ScaleD2 {
			cs, err := runSync(ctx, cfg, cfg.ScaleN2, d, cfg.Clustered, []linkemu.Profile{Loopback}, []string{sysRetained, sysWalk, sysFullCopy, sysRsync}, true, logf)
			if err != nil {
				return nil, err
			}
			res.ScaleD = append(res.ScaleD, cs...)
		}
		// The same W(n, d) with the changes in one key range instead of
		// scattered (or the other way round under -clustered).
		if d := cfg.PlacementD; d > 0 && d <= cfg.ScaleN2 {
			cs, err := runSync(ctx, cfg, cfg.ScaleN2, d, !cfg.Clustered, []linkemu.Profile{Loopback}, []string{sysRetained, sysWalk, sysFullCopy, sysRsync}, true, logf)
			if err != nil {
				return nil, err
			}
			for _, c := range res.ScaleD {
				if c.D == d {
					res.Placement = append(res.Placement, c)
				}
			}
			res.Placement = append(res.Placement, cs...)
		}
	}
	for _, cs := range [][]*SyncCase{res.Sync, res.ScaleN, res.ScaleD} {
		for _, c := range cs {
			for _, r := range c.Rows {
				if r.Skipped != "" {
					res.Skipped = appendOnce(res.Skipped, fmt.Sprintf("%s on %s: %s", r.System, c.Profile, r.Skipped))
				}
			}
		}
	}
	res.Elapsed = time.Since(start).Seconds()
	return res, nil
}
