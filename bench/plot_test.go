package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
)

// syntheticResults is a small result set with every plot's data: samples
// with known medians and ranges, a skipped system, a system missing on
// one profile, and a Stat without samples (as an old report.json has).
func syntheticResults() *Results {
	row := func(system string, time, wire []float64) *SyncRow {
		return &SyncRow{System: system, Time: NewStat(time), WireBytes: NewStat(wire)}
	}
	skipped := &SyncRow{System: sysRsync, Skipped: "rsync not installed"}
	r := &Results{Config: Config{SyncD: []int{100}}}
	for i, d := range []int{10, 100, 1000} {
		f := float64(i + 1)
		r.ScaleD = append(r.ScaleD, &SyncCase{Profile: "loopback", N: 10000, D: d, Ideal: int64(116 * d), Rows: []*SyncRow{
			row(sysRetained, []float64{0.01 * f, 0.02 * f, 0.04 * f}, []float64{2000 * f, 3000 * f, 5000 * f}),
			row(sysWalk, []float64{0.02 * f, 0.03 * f, 0.05 * f}, []float64{4000 * f, 4500 * f, 9000 * f}),
			skipped,
		}})
	}
	for _, n := range []int{1000, 10000} {
		f := float64(n) / 1000
		r.ScaleN = append(r.ScaleN, &SyncCase{Profile: "loopback", N: n, D: 100, Rows: []*SyncRow{
			row(sysRetained, []float64{0.01 * f, 0.012 * f, 0.02 * f}, nil),
			row(sysFullCopy, []float64{0.1 * f, 0.2 * f, 0.3 * f}, nil),
		}})
	}
	lan := &SyncCase{Profile: "lan", N: 10000, D: 100, Rows: []*SyncRow{
		row(sysRetained, []float64{0.010, 0.012, 0.020}, nil),
		row(sysWalk, []float64{0.015, 0.016, 0.030}, nil),
		row(sysFullCopy, []float64{0.100, 0.120, 0.200}, nil),
	}}
	wan := &SyncCase{Profile: "wan", N: 10000, D: 100, Rows: []*SyncRow{
		row(sysRetained, []float64{0.20, 0.25, 0.40}, nil),
		// No samples, as in a report.json written before samples were kept.
		{System: sysWalk, Time: Stat{Median: 0.3, Min: 0.28, Max: 0.5}},
		// No full copy on this profile.
	}}
	r.Sync = []*SyncCase{lan, wan}
	return r
}

func plottersOf[T plot.Plotter](f *figure) []T {
	var out []T
	for _, p := range f.plotters {
		if t, ok := p.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// TestPlotsShowRangesAndGroups renders every plot of a small synthetic
// result into a temporary directory, and checks that each file is a
// non-empty SVG, that every measured series is drawn with min–max error
// bars around its median, and that the per-profile plot draws bars
// grouped by profile.
func TestPlotsShowRangesAndGroups(t *testing.T) {
	r := syntheticResults()
	dir := t.TempDir()
	files, err := writePlots(r, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bytes_vs_d.svg", "sync_time_vs_n.svg", "arbor_vs_baselines.svg"}; !slices.Equal(files, want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 1000 || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("</svg>")) {
			t.Errorf("%s: %d bytes, not a complete SVG", f, len(b))
		}
	}

	// Bytes vs d: retained and walk have error bars (rsync was skipped,
	// the ideal is exact); each bar spans the samples' min to max.
	f, err := bytesVsD(r)
	if err != nil {
		t.Fatal(err)
	}
	ebs := plottersOf[*plotter.YErrorBars](f)
	if len(ebs) != 2 {
		t.Fatalf("bytes vs d: %d error-bar series, want 2 (retained, walk)", len(ebs))
	}
	for i, sys := range []string{sysRetained, sysWalk} {
		eb := ebs[i]
		if len(eb.XYs) != len(r.ScaleD) {
			t.Fatalf("%s: %d error bars, want %d", sys, len(eb.XYs), len(r.ScaleD))
		}
		for j, c := range r.ScaleD {
			st := c.Row(sys).WireBytes
			lo, hi := eb.XYs[j].Y-eb.YErrors[j].Low, eb.XYs[j].Y+eb.YErrors[j].High
			if eb.XYs[j].X != float64(c.D) || !near(eb.XYs[j].Y, st.Median) || !near(lo, st.Min) || !near(hi, st.Max) {
				t.Errorf("%s at d=%d: bar at x=%v from %v to %v around %v; want x=%d, %v to %v around %v",
					sys, c.D, eb.XYs[j].X, lo, hi, eb.XYs[j].Y, c.D, st.Min, st.Max, st.Median)
			}
		}
	}
	if n := len(plottersOf[*plotter.Line](f)); n != 3 {
		t.Errorf("bytes vs d: %d lines, want 3 (retained, walk, ideal)", n)
	}

	f, err = timeVsN(r)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(plottersOf[*plotter.YErrorBars](f)); n != 2 {
		t.Errorf("time vs n: %d error-bar series, want 2", n)
	}

	// Per profile: one bar per system and profile that ran (3 on lan, 2
	// on wan), each with an error bar at its centre; a profile's bars sit
	// side by side within its slot, in the same system order.
	f, err = profiles(r)
	if err != nil {
		t.Fatal(err)
	}
	bars := plottersOf[*plotter.BarChart](f)
	ebs = plottersOf[*plotter.YErrorBars](f)
	if len(bars) != 5 || len(ebs) != 5 {
		t.Fatalf("profiles: %d bars and %d error bars, want 5 of each", len(bars), len(ebs))
	}
	want := []struct {
		profile          int
		median, min, max float64
	}{
		{0, 0.012, 0.010, 0.020}, {1, 0.25, 0.20, 0.40}, // retained
		{0, 0.016, 0.015, 0.030}, {1, 0.3, 0.28, 0.5}, // walk
		{0, 0.120, 0.100, 0.200}, // full copy
	}
	for i, w := range want {
		b, eb := bars[i], ebs[i]
		if len(b.Values) != 1 || !near(b.Values[0], w.median) {
			t.Errorf("bar %d: %v, want one bar of %v", i, b.Values, w.median)
		}
		if b.XMin <= float64(w.profile)-0.5 || b.XMin >= float64(w.profile)+0.5 {
			t.Errorf("bar %d at x=%v, outside profile %d's slot", i, b.XMin, w.profile)
		}
		lo, hi := eb.XYs[0].Y-eb.YErrors[0].Low, eb.XYs[0].Y+eb.YErrors[0].High
		if eb.XYs[0].X != b.XMin || !near(eb.XYs[0].Y, w.median) || !near(lo, w.min) || !near(hi, w.max) {
			t.Errorf("error bar %d at x=%v from %v to %v around %v; want x=%v, %v to %v around %v",
				i, eb.XYs[0].X, lo, hi, eb.XYs[0].Y, b.XMin, w.min, w.max, w.median)
		}
	}
	// On lan, retained < walk < full copy from left to right.
	if !(bars[0].XMin < bars[2].XMin && bars[2].XMin < bars[4].XMin) {
		t.Errorf("lan's bars are not side by side in system order: %v, %v, %v", bars[0].XMin, bars[2].XMin, bars[4].XMin)
	}
	if f.Y.Min <= 0 || f.Y.Min > 0.010 {
		t.Errorf("profiles: log axis starts at %v, want in (0, 0.010]", f.Y.Min)
	}

	// Nothing measured: no plot.
	if files, err := writePlots(&Results{}, t.TempDir()); err != nil || len(files) != 0 {
		t.Errorf("empty results: %v, %v", files, err)
	}
}
