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
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/arbor-sync/arbor"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// cli is the whole command line. Flags on it are accepted before or after
// the command name.
type cli struct {
	DB string `name:"db" env:"ARBOR_DB" placeholder:"DIR" help:"Store directory (or set ARBOR_DB)."`

	Put     putCmd     `cmd:"" help:"Set KEY to VALUE ('-' reads the value from standard input)."`
	Get     getCmd     `cmd:"" help:"Print KEY's value."`
	Del     delCmd     `cmd:"" help:"Delete KEY."`
	Import  importCmd  `cmd:"" help:"Import records from FILE ('-' for standard input) in one atomic commit."`
	Export  exportCmd  `cmd:"" help:"Write records as sorted KEY<TAB>VALUE lines."`
	Scan    scanCmd    `cmd:"" help:"Print records in key order (like export, with --limit)."`
	Count   countCmd   `cmd:"" help:"Print the number of records."`
	Root    rootCmd    `cmd:"" help:"Print the root hash of the current state."`
	Verify  verifyCmd  `cmd:"" help:"Re-hash every reachable node; exit 1 naming what is corrupt or missing."`
	Diff    diffCmd    `cmd:"" help:"Show what differs between two states."`
	Status  statusCmd  `cmd:"" help:"Show the head root, the last synced root and the local changes since."`
	GC      gcCmd      `cmd:"" name:"gc" help:"Delete nodes that no retained root reaches."`
	Serve   serveCmd   `cmd:"" help:"Run a sync server on the store."`
	Sync    syncCmd    `cmd:"" help:"Sync the store with a server, both directions."`
	Demo    demoCmd    `cmd:"" help:"Run a server and three clients on loopback and report the figures."`
	Version versionCmd `cmd:"" help:"Print the version."`
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
	return arbor.Open(e.global.DB, &arbor.Options{MustExist: mustExist})
}

// exitError carries an exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// run parses args and runs one command; it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) int {
	var c cli
	exit := -1
	parser, err := kong.New(&c,
		kong.Name("arbor"),
		kong.Description("Arbor keeps key/value datasets in sync between one authoritative server and many clients.\nRecords live in a content-addressed prolly tree; the root hash summarises the whole state."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code; panic(exitSentinel{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintln(stderr, "arbor:", err)
		return 2
	}
	kctx, perr := parse(parser, args, &exit)
	if exit >= 0 {
		return exit
	}
	if perr != nil {
		fmt.Fprintln(stderr, "arbor:", perr)
		return 2
	}
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, isTTY: tty, global: &c}
	if err := kctx.Run(e); err != nil {
		fmt.Fprintln(stderr, "arbor:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}

type exitSentinel struct{}

// parse runs kong's parser, turning its exit callback (help, usage errors)
// into a return instead of a process exit.
func parse(p *kong.Kong, args []string, exit *int) (kctx *kong.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exitSentinel); !ok {
				panic(r)
			}
		}
	}()
	return p.Parse(args)
}

type versionCmd struct{}

func (versionCmd) Help() string { return "Example:\n  arbor version" }

func (versionCmd) Run(e *env) error {
	fmt.Fprintln(e.stdout, "arbor", version)
	return nil
}
