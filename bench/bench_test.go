package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestWorkloadShape: W(n, d) changes exactly d records in the 60/20/20
// shares, and the edits turn the base side into the changed side.
func TestWorkloadShape(t *testing.T) {
	for _, clustered := range []bool{false, true} {
		w, err := NewWorkload(1000, 100, 100, 7, clustered)
		if err != nil {
			t.Fatal(err)
		}
		u, i, d := w.Counts()
		if u != 60 || i != 20 || d != 20 {
			t.Fatalf("clustered=%v: counts %d/%d/%d, want 60/20/20", clustered, u, i, d)
		}
		if got := len(w.Edits()); got != 100 {
			t.Fatalf("clustered=%v: %d edits, want 100", clustered, got)
		}
		var last []byte
		n := 0
		if err := w.Changed(func(k, v []byte) error {
			if last != nil && string(k) <= string(last) {
				t.Fatalf("changed side not in key order at %x", k)
			}
			last = append(last[:0], k...)
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n != w.ChangedN() || n != 1000 {
			t.Fatalf("changed side has %d records, want %d", n, w.ChangedN())
		}
		if w.IdealBytes() != 80*116+20*16 {
			t.Fatalf("ideal bytes %d", w.IdealBytes())
		}
	}
}

// TestHarnessEndToEnd runs the smallest suite and checks that its figures
// are sane.
func TestHarnessEndToEnd(t *testing.T) {
	cfg := &Config{Suite: "test", Out: t.TempDir(), Seed: 1, ValueSize: 100, Sections: "all", TmpDir: t.TempDir()}
	if err := cfg.defaults(0); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Store) != 1 {
		t.Fatalf("store section: %d results", len(res.Store))
	}
	s := res.Store[0]
	for name, st := range map[string]Stat{
		"build arbor": s.BuildArbor, "build pebble": s.BuildPebble,
		"update arbor": s.UpdateArbor, "update pebble": s.UpdatePebble,
		"get arbor": s.GetArbor, "get pebble": s.GetPebble,
	} {
		if !st.OK() || st.Median <= 0 {
			t.Errorf("%s: %+v, want a positive rate", name, st)
		}
	}
	// Every record holds 116 bytes of key and value; nothing stores fewer
	// (values are incompressible).
	if s.BytesPerRecordArbor.Median < 116 || s.BytesPerRecordPebble.Median < 116 {
		t.Errorf("bytes per record: arbor %v, pebble %v, want ≥ 116", s.BytesPerRecordArbor.Median, s.BytesPerRecordPebble.Median)
	}
	checkResults(t, res)
	md := Markdown(res)
	if !strings.Contains(md, "## Store") || !strings.Contains(md, "NoSync") {
		t.Errorf("report lacks the store section or the durability mode:\n%s", md)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatal(err)
	}
}

// checkResults holds the checks on sections that land later.
func checkResults(t *testing.T, res *Results) {
	t.Helper()
}
