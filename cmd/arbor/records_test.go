package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"

	"github.com/arbor-sync/arbor"
)

// inProcess runs the command line in this process (no binary, no fork),
// for tests that run many commands.
func inProcess(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, bytes.NewReader(stdin), &out, &errb, false)
	return out.String(), errb.String(), code
}

func mustInProcess(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := inProcess(t, stdin, args...)
	if code != 0 {
		t.Fatalf("arbor %q: exit %d, stderr %q", args, code, errs)
	}
	return out
}

// recordSet is a set of records with arbitrary bytes: keys and values mix
// text, invalid UTF-8, NUL, tabs, newlines, quotes, JSON look-alikes,
// U+2028 and bytes ≥ 0x80, and some values are empty or large enough to be
// stored out of line.
type recordSet map[string][]byte

var interesting = [][]byte{
	{0}, {'\t'}, {'\n'}, {'\r'}, {'"'}, {'\\'}, {0xff}, {0xfe, 0xff}, {0xc3}, {0xc3, 0xa9},
	{0xed, 0xa0, 0x80}, // a UTF-16 surrogate encoded in UTF-8: not valid UTF-8
	[]byte("\u2028"), []byte("é"), []byte("🌳"), []byte(`{"key":"x"}`), []byte("_b64"), []byte("<&>"),
}

func randomBytes(r *rand.Rand, maxLen int) []byte {
	n := r.Intn(maxLen + 1)
	var b []byte
	for len(b) < n {
		switch r.Intn(3) {
		case 0:
			b = append(b, interesting[r.Intn(len(interesting))]...)
		case 1:
			b = append(b, byte(r.Intn(256)))
		default:
			b = append(b, byte('a'+r.Intn(26)))
		}
	}
	return b
}

// Generate implements quick.Generator.
func (recordSet) Generate(r *rand.Rand, size int) reflect.Value {
	rs := recordSet{}
	for range r.Intn(size + 1) {
		k := randomBytes(r, 40)
		if len(k) == 0 {
			k = []byte{byte(r.Intn(256))}
		}
		var v []byte
		switch r.Intn(10) {
		case 0: // empty
			v = []byte{}
		case 1: // out of line (over 1 KiB)
			v = randomBytes(r, 5000)
		default:
			v = randomBytes(r, 60)
		}
		rs[string(k)] = v
	}
	return reflect.ValueOf(rs)
}

// TestJSONLinesRoundTripAnyBytes: for any records, 'export --json' piped
// to 'import --format jsonl' into a fresh store gives the same root, and
// the exported lines decode to exactly the records.
func TestJSONLinesRoundTripAnyBytes(t *testing.T) {
	n := 0
	prop := func(rs recordSet) bool {
		n++
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
		db, err := arbor.Open(src, &arbor.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		b := new(arbor.Batch)
		for k, v := range rs {
			b.Put([]byte(k), v)
		}
		if b.Len() > 0 {
			if err := db.Apply(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()

		dump := mustInProcess(t, nil, "--db", src, "export", "--json")
		mustInProcess(t, []byte(dump), "--db", dst, "import", "--format", "jsonl", "-")
		if a, b := mustInProcess(t, nil, "--db", src, "root"), mustInProcess(t, nil, "--db", dst, "root"); a != b {
			t.Logf("roots differ: source %s, imported %s", a, b)
			return false
		}
		// The dump itself: sorted records, text where it is text.
		got := recordSet{}
		var keys []string
		sc := bufio.NewScanner(strings.NewReader(dump))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var raw map[string]any
			if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
				t.Logf("line %q: %v", sc.Text(), err)
				return false
			}
			k, v, err := arbor.ParseRecordJSON(sc.Bytes())
			if err != nil {
				t.Logf("line %q: %v", sc.Text(), err)
				return false
			}
			if _, ok := raw["key"]; ok != isUTF8(k) {
				t.Logf("line %q: plain \"key\" field %v, key valid UTF-8 %v", sc.Text(), ok, isUTF8(k))
				return false
			}
			got[string(k)] = v
			keys = append(keys, string(k))
		}
		if !slices.IsSorted(keys) || len(got) != len(rs) {
			t.Logf("dump has %d records (sorted %v), want %d", len(got), slices.IsSorted(keys), len(rs))
			return false
		}
		for k, v := range rs {
			if w, ok := got[k]; !ok || !bytes.Equal(v, w) {
				t.Logf("key %q: exported %q, want %q", k, w, v)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 40}); err != nil {
		var ce *quick.CheckError
		if errors.As(err, &ce) {
			// The whole record set would fill screens; the log above says
			// what differed.
			t.Fatalf("record set #%d (%d records) did not round-trip", ce.Count, len(ce.In[0].(recordSet)))
		}
		t.Fatal(err)
	}
	t.Logf("%d random record sets round-tripped", n)
}

func isUTF8(b []byte) bool { t, _ := textOrB64(b); return t != nil }

// TestImportJSONLines: the jsonl format's rules, and that a bad line
// changes nothing.
func TestImportJSONLines(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	in := `{"key":"a","value":"1"}
{"key_b64":"/wA=","value_b64":"gICA"}

{"key":"t\tab","value":""}
{"key":"a","value":"2"}
`
	if out := mustInProcess(t, []byte(in), "--db", db, "import", "--format", "jsonl", "-"); !strings.Contains(out, "imported 4 records") {
		t.Fatalf("import output %q", out)
	}
	want := `{"key":"a","value":"2"}` + "\n" + `{"key":"t\tab","value":""}` + "\n" + `{"key_b64":"/wA=","value_b64":"gICA"}` + "\n"
	if got := mustInProcess(t, nil, "--db", db, "export", "--json"); got != want {
		t.Fatalf("export --json = %q, want %q", got, want)
	}
	root := mustInProcess(t, nil, "--db", db, "root")
	for _, bad := range []struct{ line, why string }{
		{`{"key":"x"}`, `"value"`},
		{`{"value":"x"}`, `"key"`},
		{`{"key":"x","key_b64":"eA==","value":"1"}`, "both"},
		{`{"key_b64":"not base64!","value":"1"}`, "key_b64"},
		{`{"key":"x","value":"1","extra":1}`, "unknown field"},
		{"{\"key\":\"\xff\",\"value\":\"1\"}", "UTF-8"},
		{`{"key":"","value":"1"}`, "key of 0 bytes"},
		{`{"key":"x","value":"1"} {}`, "more than one"},
	} {
		_, errs, code := inProcess(t, []byte(`{"key":"ok","value":"1"}`+"\n"+bad.line+"\n"), "--db", db, "import", "--format", "jsonl", "-")
		if code == 0 || !strings.Contains(errs, "line 2") || !strings.Contains(errs, bad.why) {
			t.Errorf("import %q: exit %d, stderr %q; want a refusal naming line 2 and %q", bad.line, code, errs, bad.why)
		}
	}
	if got := mustInProcess(t, nil, "--db", db, "root"); got != root {
		t.Fatal("a refused import changed the store")
	}
}
