package arbor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.TempDir(), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestImportIsAtomicAndNamesTheBadLine(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, format, input, wantErr string
	}{
		{"tsv without tab", "tsv", "a\t1\nb\t2\nnot-a-record\nc\t3\n", "line 3"},
		{"tsv empty key", "tsv", "a\t1\n\t2\n", "line 2"},
		{"jsonl bad json", "jsonl", `{"key":"a","value":"1"}` + "\n{nope\n", "line 2"},
		{"jsonl missing value", "jsonl", `{"key":"a"}` + "\n", "line 1"},
		{"jsonl unknown field", "jsonl", `{"key":"a","value":"1","x":2}` + "\n", "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			if err := db.Put(ctx, []byte("keep"), []byte("me")); err != nil {
				t.Fatal(err)
			}
			before, _ := db.Root(ctx)
			_, err := db.Import(ctx, strings.NewReader(tc.input), ImportOptions{Format: ImportFormat(tc.format)})
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Import error = %v, want ErrBadInput naming %q", err, tc.wantErr)
			}
			if after, _ := db.Root(ctx); after != before {
				t.Fatalf("a failed import changed the root")
			}
		})
	}
}

func TestImportExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	var in strings.Builder
	// Unsorted input with a duplicate: the later line wins.
	for _, l := range []string{"k3\tc", "k1\ta", "k2\tb", "k1\tA"} {
		in.WriteString(l + "\n")
	}
	st, err := db.Import(ctx, strings.NewReader(in.String()), ImportOptions{})
	if err != nil || st.Records != 4 {
		t.Fatalf("Import = %+v, %v", st, err)
	}
	var out bytes.Buffer
	if _, err := db.Export(ctx, &out, Range{}, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "k1\tA\nk2\tb\nk3\tc\n"; got != want {
		t.Fatalf("Export = %q, want %q", got, want)
	}
	out.Reset()
	if _, err := db.Export(ctx, &out, Range{Start: []byte("k2")}, 1); err != nil || out.String() != "k2\tb\n" {
		t.Fatalf("Export from k2 limit 1 = %q, %v", out.String(), err)
	}
	out.Reset()
	if _, err := db.ExportJSONL(ctx, &out, Range{Prefix: []byte("k3")}, 0); err != nil || out.String() != `{"key":"k3","value":"c"}`+"\n" {
		t.Fatalf("ExportJSONL = %q, %v", out.String(), err)
	}
}

func TestClosedAndMissing(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.Get(ctx, []byte("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing = %v, want ErrNotFound", err)
	}
	db.Close()
	if err := db.Put(ctx, []byte("a"), []byte("b")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
}

func TestSecondOpenerIsRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(dir, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestDiffWithRefusesDifferentChunking(t *testing.T) {
	ctx := context.Background()
	a := openTest(t)
	b, err := Open(t.TempDir(), &Options{NoSync: true, Chunker: chunker.Config{LeafFanout: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, err := range a.DiffWith(ctx, b, DiffOptions{}) {
		if !errors.Is(err, ErrConfigMismatch) {
			t.Fatalf("DiffWith across chunker configs = %v, want ErrConfigMismatch", err)
		}
		return
	}
	t.Fatal("DiffWith across chunker configs yielded nothing")
}
