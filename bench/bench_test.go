package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/bench/linkemu"
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
	if err := cfg.defaults(Overrides{}); err != nil {
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
		"warm get arbor": s.GetWarmArbor, "warm get pebble": s.GetWarmPebble,
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

// checkResults checks the diff and sync sections: every diff found exactly
// d changes, every sync moved at least the ideal bytes and pulled what
// changed (roots were compared after every sync: a mismatch fails Run),
// and a baseline that did not run reports no figure.
func checkResults(t *testing.T, res *Results) {
	t.Helper()
	if len(res.Diff) == 0 {
		t.Error("no diff results")
	}
	for _, d := range res.Diff {
		if d.Changes != d.D || d.ScanChanges != d.D || d.NodesLoaded <= 0 || d.NodesLoaded > d.ScanNodes {
			t.Errorf("diff W(%d, %d): %+v", d.N, d.D, d)
		}
	}
	cases := append(append(append(append([]*SyncCase(nil), res.Sync...), res.ScaleN...), res.ScaleD...), res.Placement...)
	if len(res.Placement) != 2 || res.Placement[0].Clustered == res.Placement[1].Clustered {
		t.Errorf("placement: want one scattered and one clustered case, got %d", len(res.Placement))
	}
	if len(res.Sync) != len(res.Config.Profiles) || len(res.ScaleN) == 0 || len(res.ScaleD) == 0 {
		t.Errorf("sync cases: %d profiles, %d n-scaling, %d d-scaling", len(res.Sync), len(res.ScaleN), len(res.ScaleD))
	}
	haveRsync := rsyncPath() != ""
	for _, c := range cases {
		name := fmt.Sprintf("%s W(%d, %d)", c.Profile, c.N, c.D)
		if !c.Verified {
			t.Errorf("%s: not verified", name)
		}
		for _, r := range c.Rows {
			if r.Skipped != "" {
				if r.Time.OK() || r.WireBytes.OK() || r.StreamBytes != 0 {
					t.Errorf("%s: %s was skipped (%s) but reports figures", name, r.System, r.Skipped)
				}
				if r.System != sysRsync || haveRsync {
					t.Errorf("%s: %s skipped: %s", name, r.System, r.Skipped)
				}
				continue
			}
			if !r.Time.OK() || r.Time.Median <= 0 || len(r.Time.Samples) != c.Runs {
				t.Errorf("%s: %s time %+v", name, r.System, r.Time)
			}
			// Nothing moves fewer bytes than the changed records.
			if r.WireBytes.Min < float64(c.Ideal) {
				t.Errorf("%s: %s put %v bytes on the wire, under the ideal %d", name, r.System, r.WireBytes.Min, c.Ideal)
			}
			switch r.System {
			case sysRetained, sysWalk, sysPush:
				if r.Records != c.D || r.RoundTrips < 1 || r.StreamBytes < c.Ideal {
					t.Errorf("%s: %s pulled %d records (want %d), %d round trips, %d stream bytes", name, r.System, r.Records, c.D, r.RoundTrips, r.StreamBytes)
				}
			case sysClone, sysFullCopy, sysRawQUIC:
				if r.WireBytes.Min < float64(c.Dataset)*0.9 {
					t.Errorf("%s: %s moved %v bytes for a %d-byte data set", name, r.System, r.WireBytes.Min, c.Dataset)
				}
			}
		}
	}
}

// TestSyncWithoutBaselines: the path the full suite takes at n = 10^7,
// where the baselines' servers are not started, measures Arbor alone.
func TestSyncWithoutBaselines(t *testing.T) {
	cfg := &Config{Suite: "test", Out: t.TempDir(), Seed: 2, ValueSize: 100, Sections: "all", TmpDir: t.TempDir()}
	if err := cfg.defaults(Overrides{}); err != nil {
		t.Fatal(err)
	}
	cs, err := runSync(context.Background(), cfg, 1000, 10, true, []linkemu.Profile{Loopback}, []string{sysRetained, sysWalk}, false, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || len(cs[0].Rows) != 2 || !cs[0].Clustered {
		t.Fatalf("cases %+v", cs)
	}
	for _, r := range cs[0].Rows {
		if r.Records != 10 || r.WireBytes.Min < float64(cs[0].Ideal) {
			t.Errorf("%s: %d records, %v bytes on the wire (ideal %d)", r.System, r.Records, r.WireBytes.Min, cs[0].Ideal)
		}
	}
}

// TestRsyncMissingIsSkipped: without the rsync binary the rsync row says
// so and carries no figure, in the results and in the report.
func TestRsyncMissingIsSkipped(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no rsync here
	cfg := &Config{Suite: "test", Out: t.TempDir(), Seed: 3, ValueSize: 100, Sections: "all", TmpDir: t.TempDir()}
	if err := cfg.defaults(Overrides{}); err != nil {
		t.Fatal(err)
	}
	cs, err := runSync(context.Background(), cfg, 1000, 10, false, []linkemu.Profile{Loopback}, []string{sysRetained, sysRsync}, true, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	r := cs[0].Row(sysRsync)
	if r == nil || !strings.Contains(r.Skipped, "rsync not installed") || r.Time.OK() || r.WireBytes.OK() {
		t.Fatalf("rsync row %+v, want skipped with no figures", r)
	}
	md := Markdown(&Results{Config: *cfg, Sync: cs})
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| "+sysRsync+" |") && !strings.Contains(line, "skipped: rsync not installed") {
			t.Errorf("report row for a skipped rsync shows figures: %s", line)
		}
	}
}
