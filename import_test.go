package arbor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setImportSizes makes Import spill a run every runBytes of records and
// apply pieces of applyBytes, for one test.
func setImportSizes(t *testing.T, runBytes, applyBytes int) {
	oldRun, oldApply := importRunBytes, importApplyBytes
	importRunBytes, importApplyBytes = runBytes, applyBytes
	t.Cleanup(func() { importRunBytes, importApplyBytes = oldRun, oldApply })
}

// runDirs lists the import run directories in a store directory.
func runDirs(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, importDirPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestImportExternalSortMatchesModel imports unsorted input with many
// duplicate keys through many small sorted runs, into empty and non-empty
// stores, and checks every record against a map (the later line wins) and
// the root against the same records written in one chunk.
func TestImportExternalSortMatchesModel(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			model := map[string]string{}
			var pre strings.Builder // records in the store before the import
			for i := range 300 {
				k, v := fmt.Sprintf("k%04d", r.IntN(2000)), fmt.Sprintf("old%d", i)
				fmt.Fprintf(&pre, "%s\t%s\n", k, v)
				model[k] = v
			}
			var in strings.Builder
			n := 500 + r.IntN(3000)
			for i := range n {
				k := fmt.Sprintf("k%04d", r.IntN(2000))
				v := strings.Repeat(string(rune('a'+r.IntN(26))), r.IntN(40)) + fmt.Sprint(i)
				fmt.Fprintf(&in, "%s\t%s\n", k, v)
				model[k] = v
			}

			// The reference: both imports in one chunk each.
			ref := openTest(t)
			for _, s := range []string{pre.String(), in.String()} {
				if _, err := ref.Import(ctx, strings.NewReader(s), ImportOptions{}); err != nil {
					t.Fatal(err)
				}
			}

			setImportSizes(t, 1024+r.IntN(2048), 32+r.IntN(256))
			db := openTest(t)
			if _, err := db.Import(ctx, strings.NewReader(pre.String()), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			sawRuns := false
			st, err := db.Import(ctx, strings.NewReader(in.String()), ImportOptions{Progress: func(int64, int64) {
				sawRuns = sawRuns || len(runDirs(t, db.Dir())) > 0
			}})
			if err != nil {
				t.Fatal(err)
			}
			if st.Records != int64(n) {
				t.Fatalf("Records = %d, want %d", st.Records, n)
			}
			if !sawRuns {
				t.Fatal("the import wrote no sorted runs: the external sort went untested")
			}
			if left := runDirs(t, db.Dir()); len(left) > 0 {
				t.Fatalf("runs left after the import: %v", left)
			}
			got := map[string]string{}
			it := db.NewIterator(ctx, Range{})
			for it.Next() {
				got[string(it.Key())] = string(it.Value())
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(model) {
				t.Fatalf("%d records, want %d", len(got), len(model))
			}
			for k, v := range model {
				if got[k] != v {
					t.Fatalf("key %s = %q, want %q (the later line wins)", k, got[k], v)
				}
			}
			want, _ := ref.Root(ctx)
			if root, _ := db.Root(ctx); root != want || st.Root != want {
				t.Fatalf("root %s (reported %s), want %s as imported in one chunk", root, st.Root, want)
			}
		})
	}
}

// TestImportExternalSortFailureLeavesNothing: a bad line after runs were
// written, and a cancelled import, change nothing and leave no runs.
func TestImportExternalSortFailureLeavesNothing(t *testing.T) {
	setImportSizes(t, 100, 50)
	var in strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&in, "k%05d\tv%d\n", 999-i, i)
	}
	for _, tc := range []struct {
		name  string
		input string
		ctx   func() (context.Context, context.CancelFunc)
		want  error
	}{
		{"bad line", in.String() + "no tab here\n", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, ErrBadInput},
		{"cancelled", in.String(), func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			if err := db.Put(context.Background(), []byte("keep"), []byte("me")); err != nil {
				t.Fatal(err)
			}
			before, _ := db.Root(context.Background())
			ctx, cancel := tc.ctx()
			defer cancel()
			_, err := db.Import(ctx, strings.NewReader(tc.input), ImportOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Import error = %v, want %v", err, tc.want)
			}
			if after, _ := db.Root(context.Background()); after != before {
				t.Fatal("a failed import changed the root")
			}
			if left := runDirs(t, db.Dir()); len(left) > 0 {
				t.Fatalf("runs left after a failed import: %v", left)
			}
		})
	}
}

// TestOpenRemovesLeftoverImportRuns: runs of an import whose process died
// are removed when the store is next opened; the store is unharmed.
func TestOpenRemovesLeftoverImportRuns(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put(context.Background(), []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	left := filepath.Join(dir, importDirPrefix+"123")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left, "run-000000"), []byte("\x01a\x011"), 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("leftover runs still there after Open (stat: %v)", err)
	}
	if v, err := db.Get(context.Background(), []byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get a = %q, %v", v, err)
	}
}

// TestImportDamagedRuns: a run file that is cut short (even at a record
// boundary), runs on, or holds an impossible length makes the import fail
// with an error (never a panic, never fewer records), changing nothing.
func TestImportDamagedRuns(t *testing.T) {
	setImportSizes(t, 200, 100)
	var in strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&in, "k%05d\tv%d\n", (i*7919)%1000, i)
	}
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"cut at a record boundary", func(b []byte) []byte { return b[:2+int(b[0])+1+int(b[1+int(b[0])])] }},
		{"cut inside a record", func(b []byte) []byte { return b[:len(b)-3] }},
		{"a record too many", func(b []byte) []byte { return append(b, 1, 'z', 1, 'z') }},
		{"a key length beyond any key", func(b []byte) []byte {
			return append([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, b...)
		}},
		{"a value length beyond any value", func(b []byte) []byte { return append([]byte{1, 'a', 0xff, 0xff, 0xff, 0xff, 0x0f}, b...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			importBeforeMerge = func(runs []string) {
				b, err := os.ReadFile(runs[0])
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(runs[0], tc.damage(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			defer func() { importBeforeMerge = nil }()
			db := openTest(t)
			if err := db.Put(context.Background(), []byte("keep"), []byte("me")); err != nil {
				t.Fatal(err)
			}
			before, _ := db.Root(context.Background())
			_, err := db.Import(context.Background(), strings.NewReader(in.String()), ImportOptions{})
			if !errors.Is(err, errBadRun) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Import of damaged runs: %v, want a damaged-run error", err)
			}
			if after, _ := db.Root(context.Background()); after != before {
				t.Fatal("an import of damaged runs changed the root")
			}
		})
	}
}

// TestImportChunkCountsRecords: many tiny records spill by their count,
// not only by their bytes (each costs a record entry beside its bytes).
func TestImportChunkCountsRecords(t *testing.T) {
	setImportSizes(t, 64<<10, 16<<10)
	var runs int
	importBeforeMerge = func(rs []string) { runs = len(rs) }
	defer func() { importBeforeMerge = nil }()
	var in strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&in, "%x\t\n", i) // 2-4 byte keys, empty values: ~70 KB of record bytes
	}
	db := openTest(t)
	if _, err := db.Import(context.Background(), strings.NewReader(in.String()), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if min := 20000 * importRecSize / (64 << 10); runs < min {
		t.Fatalf("%d runs for 20000 tiny records, want at least %d: chunks are bounded by bytes only", runs, min)
	}
	if n, _ := db.Count(context.Background()); n != 20000 {
		t.Fatalf("%d records, want 20000", n)
	}
}
