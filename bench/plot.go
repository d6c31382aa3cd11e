package main

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws the SVG plots next to the report and returns their file
// names. A plot whose data did not run is not drawn.
func writePlots(r *Results, dir string) ([]string, error) {
	var out []string
	if len(r.ScaleD) > 1 {
		f := "bytes_vs_d.svg"
		if err := plotBytesVsD(r, filepath.Join(dir, f)); err != nil {
			return out, fmt.Errorf("plot %s: %w", f, err)
		}
		out = append(out, f)
	}
	if len(r.ScaleN) > 1 {
		f := "sync_time_vs_n.svg"
		if err := plotTimeVsN(r, filepath.Join(dir, f)); err != nil {
			return out, fmt.Errorf("plot %s: %w", f, err)
		}
		out = append(out, f)
	}
	if len(r.Sync) > 0 {
		f := "arbor_vs_baselines.svg"
		if err := plotProfiles(r, filepath.Join(dir, f)); err != nil {
			return out, fmt.Errorf("plot %s: %w", f, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// series collects (x, median y) points of one system across cases,
// skipping cases where it did not run.
func series(cases []*SyncCase, system string, x func(*SyncCase) float64, y func(*SyncRow) Stat) plotter.XYs {
	var xys plotter.XYs
	for _, c := range cases {
		r := c.Row(system)
		if r == nil || r.Skipped != "" || !y(r).OK() || y(r).Median <= 0 {
			continue
		}
		xys = append(xys, plotter.XY{X: x(c), Y: y(r).Median})
	}
	return xys
}

func logPlot(title, xl, yl string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text, p.Y.Label.Text = xl, yl
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.YOffs = -vg.Points(6) // clear of the title
	p.Add(plotter.NewGrid())
	return p
}

// addLines adds name/points pairs, skipping empty series.
func addLines(p *plot.Plot, pairs ...any) error {
	var keep []any
	for i := 0; i+1 < len(pairs); i += 2 {
		if xys, ok := pairs[i+1].(plotter.XYs); ok && len(xys) > 0 {
			keep = append(keep, pairs[i], xys)
		}
	}
	return plotutil.AddLinePoints(p, keep...)
}

func plotBytesVsD(r *Results, path string) error {
	n := r.ScaleD[0].N
	p := logPlot(fmt.Sprintf("Bytes on the wire vs d (n = %d, loopback)", n), "d (changed records)", "bytes on the wire")
	wire := func(r *SyncRow) Stat { return r.WireBytes }
	d := func(c *SyncCase) float64 { return float64(c.D) }
	var ideal plotter.XYs
	for _, c := range r.ScaleD {
		ideal = append(ideal, plotter.XY{X: float64(c.D), Y: float64(c.Ideal)})
	}
	if err := addLines(p,
		"Arbor, retained base", series(r.ScaleD, sysRetained, d, wire),
		"Arbor, walk", series(r.ScaleD, sysWalk, d, wire),
		"rsync of sorted dump", series(r.ScaleD, sysRsync, d, wire),
		"full copy", series(r.ScaleD, sysFullCopy, d, wire),
		"ideal (changed records)", ideal,
	); err != nil {
		return err
	}
	headroom(p)
	widen(p)
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}

func plotTimeVsN(r *Results, path string) error {
	p := logPlot(fmt.Sprintf("Sync time vs n (d = %d, loopback)", r.ScaleN[0].D), "n (records)", "wall time (s)")
	t := func(r *SyncRow) Stat { return r.Time }
	n := func(c *SyncCase) float64 { return float64(c.N) }
	if err := addLines(p,
		"Arbor, retained base", series(r.ScaleN, sysRetained, n, t),
		"Arbor, walk", series(r.ScaleN, sysWalk, n, t),
		"full copy (TCP)", series(r.ScaleN, sysFullCopy, n, t),
	); err != nil {
		return err
	}
	headroom(p)
	widen(p)
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}

// plotProfiles draws, per link profile, each system's median wall time in
// the same runs, on a log scale.
func plotProfiles(r *Results, path string) error {
	cases := r.Sync
	if d := cases[0].D; len(r.Config.SyncD) > 1 {
		var first []*SyncCase
		for _, c := range cases {
			if c.D == d {
				first = append(first, c)
			}
		}
		cases = first
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Arbor against the baselines per link profile, W(%d, %d)", cases[0].N, cases[0].D)
	p.Y.Label.Text = "wall time (s), median"
	p.X.Label.Text = "link profile"
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.YOffs = -vg.Points(6)
	p.Add(plotter.NewGrid())
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.Profile // the links are spelled out in the report
	}
	idx := map[*SyncCase]float64{}
	for i, c := range cases {
		idx[c] = float64(i)
	}
	x := func(c *SyncCase) float64 { return idx[c] }
	t := func(r *SyncRow) Stat { return r.Time }
	if err := addLines(p,
		"Arbor, retained base", series(cases, sysRetained, x, t),
		"Arbor, walk", series(cases, sysWalk, x, t),
		"rsync of sorted dump (TCP)", series(cases, sysRsync, x, t),
		"full copy (TCP)", series(cases, sysFullCopy, x, t),
	); err != nil {
		return err
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.4, float64(len(names))-0.6 // keep the end labels inside
	headroom(p)
	return p.Save(9*vg.Inch, 5*vg.Inch, path)
}

// headroom raises a log-scale plot's top by a decade, so the legend in the
// top left corner covers no data.
func headroom(p *plot.Plot) {
	p.Y.Max *= 30
}

// widen pads a log-scale x axis so the end tick labels are not clipped.
func widen(p *plot.Plot) {
	p.X.Min /= 1.3
	p.X.Max *= 1.5
}
