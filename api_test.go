package arbor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/chunker"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
	"github.com/arbor-sync/arbor/tree"
)

func openDB(t *testing.T) *arbor.DB {
	t.Helper()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// collect ranges over seq, cloning every record, and fails the test on an
// error.
func collect(t *testing.T, seq func(func(arbor.Record, error) bool)) []arbor.Record {
	t.Helper()
	var out []arbor.Record
	for rec, err := range seq {
		if err != nil {
			t.Fatalf("iteration error after %d records: %v", len(out), err)
		}
		out = append(out, arbor.Record{Key: bytes.Clone(rec.Key), Value: bytes.Clone(rec.Value)})
	}
	return out
}

// model returns the records of m inside r, in key order, the way
// arbor.Range defines them (Prefix intersected with [Start, End)).
func model(m map[string]string, r arbor.Range) []arbor.Record {
	var out []arbor.Record
	for k, v := range m {
		kb := []byte(k)
		if !bytes.HasPrefix(kb, r.Prefix) ||
			(r.Start != nil && bytes.Compare(kb, r.Start) < 0) ||
			(r.End != nil && bytes.Compare(kb, r.End) >= 0) {
			continue
		}
		out = append(out, arbor.Record{Key: kb, Value: []byte(v)})
	}
	slices.SortFunc(out, func(a, b arbor.Record) int { return bytes.Compare(a.Key, b.Key) })
	return out
}

func sameRecords(t *testing.T, what string, got, want []arbor.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("%s: record %d is %q (%d-byte value), want %q (%d-byte value)",
				what, i, got[i].Key, len(got[i].Value), want[i].Key, len(want[i].Value))
		}
	}
}

// TestScanMatchesMapModel is a property test: after every round of random
// puts and deletes (single writes and batches), DB.All and DB.Scan over
// random prefixes and intervals yield exactly what a Go map holds, in key
// order, values included (inline, empty and out-of-line ones).
func TestScanMatchesMapModel(t *testing.T) {
	ctx := context.Background()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0xA5B0))
			db := openDB(t)
			m := map[string]string{}
			// Keys over a small alphabet, so that prefixes and intervals
			// select interesting subsets and deletes hit existing keys.
			key := func() []byte {
				b := make([]byte, 1+rng.IntN(5))
				for i := range b {
					b[i] = "abcd/"[rng.IntN(5)]
				}
				return b
			}
			value := func() []byte {
				switch rng.IntN(20) {
				case 0:
					return []byte{}
				case 1: // out of line (> 1 KiB), read back through ReadValue
					v := make([]byte, 1025+rng.IntN(6000))
					for i := range v {
						v[i] = byte(rng.Uint32())
					}
					return v
				default:
					return fmt.Appendf(nil, "v%d", rng.Uint32())
				}
			}
			bound := func() []byte {
				if rng.IntN(3) == 0 {
					return nil
				}
				return key()
			}
			for round := range 12 {
				b := new(arbor.Batch)
				for range 1 + rng.IntN(150) {
					k := key()
					if rng.IntN(4) == 0 {
						b.Delete(k)
						delete(m, string(k))
					} else {
						v := value()
						b.Put(k, v)
						m[string(k)] = string(v)
					}
				}
				if err := db.Apply(ctx, b); err != nil {
					t.Fatal(err)
				}
				// Some single writes too.
				k := key()
				if rng.IntN(2) == 0 {
					if err := db.Delete(ctx, k); err != nil {
						t.Fatal(err)
					}
					delete(m, string(k))
				} else {
					v := value()
					if err := db.Put(ctx, k, v); err != nil {
						t.Fatal(err)
					}
					m[string(k)] = string(v)
				}

				sameRecords(t, fmt.Sprintf("round %d: All", round), collect(t, db.All(ctx)), model(m, arbor.Range{}))
				for q := range 8 {
					var r arbor.Range
					switch q % 3 {
					case 0:
						k := key()
						r.Prefix = k[:min(len(k), 1+rng.IntN(2))]
					case 1:
						r.Start, r.End = bound(), bound()
					default:
						r.Prefix, r.Start, r.End = key()[:1], bound(), bound()
					}
					sameRecords(t, fmt.Sprintf("round %d: Scan(prefix %q, [%q, %q))", round, r.Prefix, r.Start, r.End),
						collect(t, db.Scan(ctx, r)), model(m, r))
				}
			}
		})
	}
}

// fill writes n records k00000.. with short values.
func fill(t *testing.T, db *arbor.DB, n int) {
	t.Helper()
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "k%05d\tv%d\n", i, i)
	}
	if _, err := db.Import(context.Background(), strings.NewReader(in.String()), arbor.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
}

// gcWithin runs a GC that must start within d: GC waits for every open
// iterator, so a leaked one makes it time out.
func gcWithin(t *testing.T, db *arbor.DB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, err := db.GC(ctx); err != nil {
		t.Fatalf("GC after the loop: %v (an iterator still holds the store)", err)
	}
}

// TestScanEarlyExitReleases: leaving a range loop early (break, return
// from a function, a panic in the body) releases the iterator, so a GC
// runs at once afterwards and the DB closes cleanly.
func TestScanEarlyExitReleases(t *testing.T) {
	ctx := context.Background()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, db, 5000) // many leaves, so the loop stops mid-tree

	n := 0
	for _, err := range db.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 10 {
			break
		}
	}
	gcWithin(t, db, 3*time.Second)

	first := func() []byte {
		for rec, err := range db.Scan(ctx, arbor.Range{Prefix: []byte("k02")}) {
			if err != nil {
				t.Fatal(err)
			}
			return bytes.Clone(rec.Key)
		}
		return nil
	}
	if k := first(); string(k) != "k02000" {
		t.Fatalf("first key of prefix k02 = %q", k)
	}
	gcWithin(t, db, 3*time.Second)

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the loop body's panic did not propagate")
			}
		}()
		for range db.All(ctx) {
			panic("stop")
		}
	}()
	gcWithin(t, db, 3*time.Second)

	// Nested loops over one DB, the inner one left early each time.
	outer := 0
	for rec, err := range db.Scan(ctx, arbor.Range{Start: []byte("k00100"), End: []byte("k00103")}) {
		if err != nil {
			t.Fatal(err)
		}
		outer++
		for inner, err := range db.Scan(ctx, arbor.Range{Start: rec.Key}) {
			if err != nil || !bytes.Equal(inner.Key, rec.Key) {
				t.Fatalf("inner scan from %q: %q, %v", rec.Key, inner.Key, err)
			}
			break
		}
	}
	if outer != 3 {
		t.Fatalf("outer loop saw %d records, want 3", outer)
	}
	gcWithin(t, db, 3*time.Second)

	if err := db.Close(); err != nil {
		t.Fatalf("Close after early exits: %v", err)
	}
	// The store can be opened again: nothing holds it.
	db2, err := arbor.Open(db.Dir(), &arbor.Options{NoSync: true, MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := db2.Count(ctx); err != nil || c != 5000 {
		t.Fatalf("reopened: %d records, %v", c, err)
	}
	db2.Close()
}

// TestScanSnapshotAndErrors: a loop reads the tree of the moment it
// starts (its own writes are not seen, and a fresh range sees them); an
// error is the last pair yielded, with the zero Record.
func TestScanSnapshotAndErrors(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	fill(t, db, 3)
	seq := db.All(ctx) // taken before the write below: still a fresh snapshot per loop
	if err := db.Put(ctx, []byte("k00003"), []byte("v3")); err != nil {
		t.Fatal(err)
	}
	n := 0
	for rec, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		n++
		// Writes from the loop body: allowed, and not seen by this loop.
		if err := db.Put(ctx, append([]byte("z"), rec.Key...), rec.Value); err != nil {
			t.Fatal(err)
		}
	}
	if n != 4 {
		t.Fatalf("first loop saw %d records, want 4 (the write made before it started included)", n)
	}
	if got := len(collect(t, seq)); got != 8 {
		t.Fatalf("second loop saw %d records, want 8", got)
	}

	// A cancelled context ends the loop with its error.
	big := openDB(t)
	fill(t, big, 5000)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last error
	n = 0
	for rec, err := range big.All(cctx) {
		if last != nil {
			t.Fatalf("a pair after the error %v", last)
		}
		if err != nil {
			if rec.Key != nil || rec.Value != nil {
				t.Fatalf("error pair carries a record %q", rec.Key)
			}
			last = err
			continue
		}
		if n++; n == 10 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) || n >= 5000 {
		t.Fatalf("after cancel: %d records, last error %v; want context.Canceled before the end", n, last)
	}

	// A closed DB yields ErrClosed.
	db.Close()
	var errs []error
	for _, err := range db.All(ctx) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], arbor.ErrClosed) {
		t.Fatalf("All on a closed DB yielded %v, want one ErrClosed", errs)
	}
}

// exportedErrVars returns the exported package-level variables named Err*
// declared in the non-test Go files of dir.
func exportedErrVars(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if n.IsExported() && strings.HasPrefix(n.Name, "Err") {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// TestErrorsSectionListsEverySentinel: the package documentation's Errors
// section (doc.go) names every sentinel error the package declares, as a
// doc link, so that `go doc arbor` lists them in one place.
func TestErrorsSectionListsEverySentinel(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	_, section, ok := strings.Cut(doc, "\n# Errors\n")
	if !ok {
		t.Fatalf("doc.go's package comment has no \"# Errors\" section")
	}
	names := exportedErrVars(t, ".")
	if len(names) < 20 {
		t.Fatalf("found only %d sentinels in the package: %v", len(names), names)
	}
	for _, n := range names {
		if !strings.Contains(section, "["+n+"]") {
			t.Errorf("the Errors section of doc.go does not list [%s]", n)
		}
	}
	for _, m := range regexp.MustCompile(`\[(Err[A-Za-z]*)\]`).FindAllStringSubmatch(section, -1) {
		if !slices.Contains(names, m[1]) {
			t.Errorf("the Errors section of doc.go lists [%s], which the package does not declare", m[1])
		}
	}
}

// TestLowerSentinelsReachable classifies every sentinel error of the
// packages below the API: each one that a call of this package can return
// is re-exported under a name of this package (the same value, so
// errors.Is matches either), and each one that cannot says why. A new
// sentinel in one of those packages fails this test until it is
// classified here.
func TestLowerSentinelsReachable(t *testing.T) {
	type entry struct {
		lower, root error  // root: the re-export; nil if none
		why         string // why no re-export is needed
	}
	table := map[string]entry{
		"tree.ErrNotFound":       {tree.ErrNotFound, arbor.ErrNotFound, ""},
		"tree.ErrNotStore":       {tree.ErrNotStore, arbor.ErrNotStore, ""},
		"tree.ErrNewerFormat":    {tree.ErrNewerFormat, arbor.ErrNewerFormat, ""},
		"tree.ErrLocked":         {tree.ErrLocked, arbor.ErrLocked, ""},
		"tree.ErrConfigMismatch": {tree.ErrConfigMismatch, arbor.ErrConfigMismatch, ""},
		"tree.ErrClosed":         {tree.ErrClosed, arbor.ErrClosed, ""},
		"tree.ErrKeyTooLarge":    {tree.ErrKeyTooLarge, arbor.ErrKeyTooLarge, ""},
		"tree.ErrValueTooLarge":  {tree.ErrValueTooLarge, arbor.ErrValueTooLarge, ""},
		"tree.ErrRefMoved":       {tree.ErrRefMoved, arbor.ErrRefMoved, ""},
		"tree.ErrVerify":         {tree.ErrVerify, arbor.ErrVerify, ""},
		"tree.ErrUnsorted": {tree.ErrUnsorted, nil,
			"only tree.Build returns it; the root package never builds from caller input (Import sorts first)"},
		"tree.ErrAddressConflict": {tree.ErrAddressConflict, nil,
			"only writes with address checks on return it (tree.Options.CheckAddresses, tree.Batch.CheckAddresses), which this package never turns on; a server answers it to the client as ErrRefused"},
		"tree.ErrNoWorkingSet": {tree.ErrNoWorkingSet, nil,
			"only Store.Write on a store opened without a working ref returns it; Open always gives a DB's store one"},
		"node.ErrCorrupt":       {node.ErrCorrupt, arbor.ErrCorrupt, ""},
		"node.ErrNotFound":      {node.ErrNotFound, arbor.ErrNodeNotFound, ""},
		"scope.ErrOutOfScope":   {scope.ErrOutOfScope, arbor.ErrOutOfScope, ""},
		"chunker.ErrBadConfig":  {chunker.ErrBadConfig, arbor.ErrBadConfig, ""},
		"net.ErrUnauthorized":   {arbornet.ErrUnauthorized, arbor.ErrUnauthorized, ""},
		"net.ErrFingerprint":    {arbornet.ErrFingerprint, arbor.ErrFingerprint, ""},
		"net.ErrProtocol":       {arbornet.ErrProtocol, arbor.ErrProtocol, ""},
		"net.ErrFrameTooLarge":  {arbornet.ErrFrameTooLarge, arbor.ErrFrameTooLarge, ""},
		"net.ErrRootMismatch":   {arbornet.ErrRootMismatch, arbor.ErrRootMismatch, ""},
		"net.ErrConfigMismatch": {arbornet.ErrConfigMismatch, arbor.ErrServerConfigMismatch, ""},
		"net.ErrForbiddenScope": {arbornet.ErrForbiddenScope, arbor.ErrForbiddenScope, ""},
		"net.ErrRefused":        {arbornet.ErrRefused, arbor.ErrRefused, ""},
		"net.ErrVersion":        {arbornet.ErrVersion, arbor.ErrVersion, ""},
		"net.ErrNoSyncHistory":  {arbornet.ErrNoSyncHistory, arbor.ErrNoSyncHistory, ""},
		"net.ErrUnpushable":     {arbornet.ErrUnpushable, arbor.ErrUnpushable, ""},
		"net.ErrRemote":         {arbornet.ErrRemote, arbor.ErrRemote, ""},
	}
	seen := map[string]bool{}
	for _, pkg := range []string{"tree", "node", "scope", "chunker", "net", "diff"} {
		for _, n := range exportedErrVars(t, pkg) {
			name := pkg + "." + n
			seen[name] = true
			e, ok := table[name]
			switch {
			case !ok:
				t.Errorf("%s is not classified: re-export it in errors.go if a call of package arbor can return it, and add it here either way", name)
			case e.root == nil && e.why == "":
				t.Errorf("%s: neither re-exported nor explained", name)
			case e.root != nil && e.root != e.lower:
				t.Errorf("%s: the re-export is another value (%v vs %v)", name, e.root, e.lower)
			}
		}
	}
	for name, e := range table {
		if !seen[name] && e.lower != nil {
			t.Errorf("%s is in the table but no longer declared", name)
		}
	}
}

// TestSentinelsSurface checks, for the cheap cases, that a call of the
// package really returns an error matching the sentinel it documents.
func TestSentinelsSurface(t *testing.T) {
	ctx := context.Background()
	is := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want an error wrapping %q", what, err, want)
		}
	}

	_, err := arbor.Open(t.TempDir(), &arbor.Options{Chunker: chunker.Config{LeafFanout: 1, BranchFanout: 1}})
	is("Open with a bad chunker config", err, arbor.ErrBadConfig)

	newer := t.TempDir()
	db, err := arbor.Open(newer, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.WriteFile(filepath.Join(newer, "ARBOR"), []byte("arbor store\nformat 999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = arbor.Open(newer, nil)
	is("Open of a newer store format", err, arbor.ErrNewerFormat)

	mismatch := t.TempDir()
	if db, err = arbor.Open(mismatch, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = arbor.Open(mismatch, &arbor.Options{Chunker: chunker.Config{LeafFanout: 8}})
	is("Open with another chunker config than the store's", err, arbor.ErrConfigMismatch)

	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("hi"), 0o644)
	_, err = arbor.Open(other, nil)
	is("Open of a directory holding other files", err, arbor.ErrNotStore)

	db = openDB(t)
	is("Put of an empty key", db.Put(ctx, nil, []byte("v")), arbor.ErrKeyTooLarge)
	is("Put of a 4097-byte key", db.Put(ctx, bytes.Repeat([]byte("k"), 4097), nil), arbor.ErrKeyTooLarge)
	_, err = db.Get(ctx, []byte("missing"))
	is("Get of a missing key", err, arbor.ErrNotFound)
	_, err = db.Import(ctx, strings.NewReader("no tab here\n"), arbor.ImportOptions{})
	is("Import of a malformed line", err, arbor.ErrBadInput)

	// Sync failures, against a server in this process.
	srv, srvDB := startServer(t, nil)
	srvDB.Put(ctx, []byte("a"), []byte("1"))
	good := arbor.SyncOptions{Server: srv.Addr().String(), Token: testToken, Fingerprint: srv.Fingerprint()}

	bad := good
	bad.Token = "not-the-token-0123456789"
	_, err = openDB(t).Sync(ctx, bad)
	is("Sync with an unknown token", err, arbor.ErrUnauthorized)

	bad = good
	bad.Fingerprint = strings.Repeat("00", 32)
	_, err = openDB(t).Sync(ctx, bad)
	is("Sync with a wrong fingerprint", err, arbor.ErrFingerprint)

	fanout, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true, Chunker: chunker.Config{LeafFanout: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer fanout.Close()
	if err := fanout.Put(ctx, []byte("local"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	merge := good
	merge.Merge = true
	_, err = fanout.Sync(ctx, merge)
	is("Sync of a store that holds data of another chunker config", err, arbor.ErrServerConfigMismatch)
	if errors.Is(err, arbor.ErrConfigMismatch) {
		t.Logf("note: a Sync config mismatch now also matches ErrConfigMismatch")
	}

	client := openDB(t)
	if _, err := client.Sync(ctx, good); err != nil {
		t.Fatal(err)
	}
	client.Put(ctx, []byte("big"), bytes.Repeat([]byte("x"), 200<<10))
	small := good
	small.MaxFrame = 128 << 10
	_, err = client.Sync(ctx, small)
	is("Sync pushing a value over MaxFrame", err, arbor.ErrFrameTooLarge)
}

const testToken = "api-test-token-0123456789"

// startServer serves a fresh DB on a loopback port until the test ends.
func startServer(t *testing.T, opts *arbor.Options) (*arbor.Server, *arbor.DB) {
	t.Helper()
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if opts != nil {
		db, err = arbor.Open(t.TempDir(), opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := arbor.NewServer(db, arbor.ServerOptions{
		Tokens:  []arbor.Token{{Token: testToken, ClientID: "api-test"}},
		CertDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
		db.Close()
	})
	return srv, db
}
