// Command arbor is the command-line interface to Arbor stores: local reads
// and writes, imports and exports, integrity audits, diffs, and the sync
// server and client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/tree"
)

// version is set at build time with -ldflags "-X main.version=…"; when it
// is not, the module version recorded in the binary is used (see
// versionString), so 'go install …/cmd/arbor@vX' reports vX.
var version string

// cli is the whole command line. Flags on it are accepted before or after
// the command name.
type cli struct {
	DB          string           `name:"db" env:"ARBOR_DB" placeholder:"DIR" help:"Store directory (or set ARBOR_DB)."`
	Hash        string           `name:"hash" env:"ARBOR_HASH" placeholder:"ALG" help:"Hash of a new store: xxh3 (the default, fastest) or blake3 (collision resistant: for a server whose writers do not trust each other). An existing store keeps its own; a replica's first sync takes its server's."`
	CacheMB     int64            `name:"cache-mb" env:"ARBOR_CACHE_MB" placeholder:"MIB" help:"Memory for decoded nodes kept for reads and syncs, in MiB (default 128). The process's Go heap is held near this plus 96 MiB unless GOMEMLIMIT is set."`
	VersionFlag kong.VersionFlag `name:"version" help:"Print the version and exit."`

	Put        putCmd        `cmd:"" help:"Set KEY to VALUE ('-' reads the value from standard input)."`
	Get        getCmd        `cmd:"" help:"Print KEY's value."`
	Del        delCmd        `cmd:"" help:"Delete KEY."`
	Import     importCmd     `cmd:"" help:"Import records from FILE ('-' for standard input) in one atomic commit."`
	Export     exportCmd     `cmd:"" help:"Write records as sorted KEY<TAB>VALUE lines (or JSON lines)."`
	Scan       scanCmd       `cmd:"" help:"Print records in key order (the same as export)."`
	Count      countCmd      `cmd:"" help:"Print the number of records (all, or in a prefix or range)."`
	Root       rootCmd       `cmd:"" help:"Print the root hash of the current state."`
	Verify     verifyCmd     `cmd:"" help:"Re-hash every reachable node; exit 1 naming what is corrupt or missing."`
	Diff       diffCmd       `cmd:"" help:"Show what differs between two states."`
	Status     statusCmd     `cmd:"" help:"Show the head root, the last synced root and the local changes since."`
	GC         gcCmd         `cmd:"" name:"gc" help:"Delete nodes that no retained root reaches."`
	Serve      serveCmd      `cmd:"" help:"Run a sync server on the store (or, with --etcd, --s3 and --bucket, one of a cluster's servers)."`
	Cluster    clusterCmd    `cmd:"" help:"Administer a cluster of servers over S3 and etcd: status, import, export, gc."`
	Sync       syncCmd       `cmd:"" help:"Sync the store with a server, both directions."`
	Example    exampleCmd    `cmd:"" help:"Write an example dataset (KEY<TAB>VALUE lines) to standard output."`
	Demo       demoCmd       `cmd:"" help:"Run a server and three clients on loopback and report the figures."`
	Version    versionCmd    `cmd:"" help:"Print the version."`
	Completion completionCmd `cmd:"" help:"Print a shell's tab-completion script (bash, zsh or fish)."`
	Help       helpCmd       `cmd:"" help:"Show help for arbor or for one command."`
}

// defaultCacheMB is the node cache of a store the CLI opens. It is half the
// library's default: with it and the memory limit below, a server of 10^8
// records stays under 512 MiB (README, "10^8 records").
const defaultCacheMB = 128

// cacheBytes is the node cache --cache-mb asks for, in bytes.
func (c *cli) cacheBytes() int64 {
	if c.CacheMB == 0 {
		return defaultCacheMB << 20
	}
	return c.CacheMB << 20
}

// limitMemory makes run give the Go runtime a soft memory limit; main sets
// it, so tests that call run in their own process keep theirs.
var limitMemory bool

// memoryHeadroom is the Go memory a command may use beyond its node cache
// before the garbage collector works harder to stay under the limit: the
// sync and import buffers, QUIC's windows, Pebble's Go-side state. Pebble's
// block cache and memtables are C memory in a cgo build, and added to the
// limit in one without cgo (pebbleInGoHeap).
const memoryHeadroom = 96 << 20

// memoryLimit is the soft memory limit for a process whose node cache is
// cacheBytes, unless the user set GOMEMLIMIT (goMemLimit), which wins.
// Without a limit the Go heap grows to twice what it holds (GOGC=100), and
// a server's node cache is most of what it holds: 935 MiB of RSS for a
// 10^8 clone against 549 with a limit.
func memoryLimit(cacheBytes int64, goMemLimit string) (int64, bool) {
	if goMemLimit != "" {
		return 0, false
	}
	limit := cacheBytes + memoryHeadroom
	if pebbleInGoHeap {
		limit += tree.DefaultPebbleCacheSize
	}
	return limit, true
}

// env carries the process's streams and context into commands.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	isTTY  bool
	global *cli
}

// openDB opens the store named by --db.
func (e *env) openDB(mustExist bool) (*arbor.DB, error) {
	if e.global.DB == "" {
		return nil, errors.New("no store: pass --db DIR or set ARBOR_DB")
	}
	if e.global.CacheMB < 0 {
		return nil, fmt.Errorf("--cache-mb %d: want a size in MiB, or 0 for the default", e.global.CacheMB)
	}
	var alg arbor.HashAlg
	if e.global.Hash != "" {
		a, err := arbor.ParseHashAlg(e.global.Hash)
		if err != nil {
			return nil, fmt.Errorf("--hash: %w", err)
		}
		alg = a
	}
	db, err := arbor.Open(e.global.DB, &arbor.Options{MustExist: mustExist, CacheSize: e.global.cacheBytes(), Hash: alg})
	if errors.Is(err, arbor.ErrConfigMismatch) && alg != 0 {
		err = fmt.Errorf("%w: --hash %s names another hash than the store's (a store's hash is fixed when it is created)", err, e.global.Hash)
	}
	if errors.Is(err, arbor.ErrLocked) {
		err = fmt.Errorf("%w. If 'arbor serve' runs on it, change its records through a replica: "+
			"sync one with a token that may write every key ('arbor --db admin sync --server ADDR --token-file admin.token'), "+
			"then 'arbor --db admin put KEY VALUE' (or import, del) and 'arbor --db admin sync' again "+
			"(README: \"Changing the data while serving\")", err)
	}
	return db, err
}

// exitError carries an exit code other than 1. An exitError with a nil
// err prints nothing: the command has already said why.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func main() {
	limitMemory = true
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// newParser builds the command-line parser for c. Kong's exit callback
// (after --help, --version, a completion request) sets *exit and unwinds
// with exitSentinel, which parse recovers.
func newParser(c *cli, stdout, stderr io.Writer, exit *int) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("arbor"),
		kong.Description("Arbor keeps key/value datasets in sync between one authoritative server and many clients.\nRecords live in a content-addressed prolly tree; the root hash summarises the whole state.\n\nRun 'arbor help COMMAND' (or 'arbor COMMAND --help') for a command's flags and an example."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { *exit = code; panic(exitSentinel{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"version": "arbor " + versionString()},
	)
}

// run parses args and runs one command; it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) int {
	var c cli
	exit := -1
	parser, err := newParser(&c, stdout, stderr, &exit)
	if err != nil {
		fmt.Fprintln(stderr, errorLine(err))
		return 2
	}
	// A shell asking for completions (COMP_LINE set, see 'arbor
	// completion') gets them and nothing else.
	complete(parser)
	if exit >= 0 {
		return exit
	}
	if len(args) == 0 {
		args = []string{"--help"} // a bare 'arbor' shows what it can do
	}
	kctx, perr := parse(parser, args)
	if exit >= 0 {
		return exit
	}
	if perr != nil {
		fmt.Fprintln(stderr, errorLine(perr))
		hint := "arbor --help"
		var pe *kong.ParseError
		if errors.As(perr, &pe) && pe.Context != nil && pe.Context.Selected() != nil {
			hint = "arbor help " + pe.Context.Selected().Name
		}
		fmt.Fprintf(stderr, "run '%s' for usage\n", hint)
		return 2
	}
	if limitMemory && c.CacheMB >= 0 {
		if limit, ok := memoryLimit(c.cacheBytes(), os.Getenv("GOMEMLIMIT")); ok {
			debug.SetMemoryLimit(limit)
		}
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, isTTY: tty, global: &c}
	if err := kctx.Run(e); err != nil {
		var ee *exitError
		if errors.As(err, &ee) && ee.err == nil {
			return ee.code
		}
		fmt.Fprintln(stderr, errorLine(err))
		if ee != nil {
			return ee.code
		}
		return 1
	}
	return 0
}

// errorLine is the one line a failure prints: "arbor: " and the reason.
// The library's own errors already begin with its package name
// ("arbor: write refused on a partial replica: …"), which would read
// "arbor: arbor: …" after the program's prefix, so a leading "arbor: " is
// not repeated.
func errorLine(err error) string {
	return "arbor: " + strings.TrimPrefix(err.Error(), "arbor: ")
}

type exitSentinel struct{}

// recoverExit turns kong's exit callback (help, version, completions) into
// a return instead of a process exit.
func recoverExit() {
	if r := recover(); r != nil {
		if _, ok := r.(exitSentinel); !ok {
			panic(r)
		}
	}
}

// parse runs kong's parser; see recoverExit.
func parse(p *kong.Kong, args []string) (kctx *kong.Context, err error) {
	defer recoverExit()
	return p.Parse(args)
}

// readBuildInfo is debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// versionString is the version set with -ldflags "-X main.version=…"; else
// the main module's version recorded in the binary (vX for 'go install
// …@vX', a pseudo-version for a build in a git checkout); else "dev",
// with the VCS revision when it was recorded.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := readBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return "dev (" + rev + ")"
}

type versionCmd struct {
	JSON bool `name:"json" help:"Print as JSON: {\"version\": …, \"go\": …}."`
}

func (versionCmd) Help() string { return "Example:\n  arbor version\n  arbor --version" }

func (c versionCmd) Run(e *env) error {
	if c.JSON {
		return writeJSON(e.stdout, struct {
			Version string `json:"version"`
			Go      string `json:"go"`
		}{versionString(), runtime.Version()})
	}
	fmt.Fprintln(e.stdout, "arbor", versionString())
	return nil
}

type helpCmd struct {
	Command []string `arg:"" optional:"" placeholder:"COMMAND" help:"The command to describe (none: all of them)."`
}

func (helpCmd) Help() string { return "Example:\n  arbor help\n  arbor help sync" }

// Run prints the help of the named command, as 'arbor COMMAND --help' does.
func (c helpCmd) Run(e *env) error {
	args := append(append([]string{}, c.Command...), "--help")
	if code := run(e.ctx, args, e.stdin, e.stdout, e.stderr, e.isTTY); code != 0 {
		return &exitError{code: code}
	}
	return nil
}
