package main

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Every measured figure is drawn at its median, with an error bar from the
// minimum to the maximum of its runs (plotutil.MedianAndMinMax over the
// samples, the same figures as the report's tables). Figures along a
// numeric axis (d, n) are lines through the medians; figures per link
// profile, a categorical axis, are bars grouped by profile, one colour per
// system.

// writePlots draws the SVG plots next to the report and returns their file
// names. A plot whose data did not run is not drawn.
func writePlots(r *Results, dir string) ([]string, error) {
	var out []string
	for _, p := range []struct {
		file string
		draw func(*Results) (*figure, error)
		ok   bool
		w    vg.Length
	}{
		{"bytes_vs_d.svg", bytesVsD, len(r.ScaleD) > 1, 7 * vg.Inch},
		{"sync_time_vs_n.svg", timeVsN, len(r.ScaleN) > 1, 7 * vg.Inch},
		{"arbor_vs_baselines.svg", profiles, len(r.Sync) > 0, 9 * vg.Inch},
	} {
		if !p.ok {
			continue
		}
		f, err := p.draw(r)
		if err == nil {
			err = f.Save(p.w, 5*vg.Inch, filepath.Join(dir, p.file))
		}
		if err != nil {
			return out, fmt.Errorf("plot %s: %w", p.file, err)
		}
		out = append(out, p.file)
	}
	return out, nil
}

// figure is a plot that remembers its plotters, so tests can check what
// was drawn.
type figure struct {
	*plot.Plot
	plotters []plot.Plotter
}

func (f *figure) add(ps ...plot.Plotter) {
	f.Plot.Add(ps...)
	f.plotters = append(f.plotters, ps...)
}

// samples is one figure's runs as points at x, the input of
// plotutil.NewErrorPoints.
type samples struct {
	x  float64
	ys []float64
}

func (s samples) Len() int                    { return len(s.ys) }
func (s samples) XY(i int) (float64, float64) { return s.x, s.ys[i] }

// positive returns st's samples that a log scale can show. A Stat read
// from an old report.json without samples gives its minimum, median and
// maximum, which summarise the same way.
func positive(st Stat) []float64 {
	in := st.Samples
	if len(in) == 0 && st.Median > 0 {
		in = []float64{st.Min, st.Median, st.Max}
	}
	var out []float64
	for _, v := range in {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// errorPoints summarises one system's figure at each x, skipping cases
// where it did not run: median points with min–max errors.
func errorPoints(cases []*SyncCase, system string, x func(*SyncCase) float64, y func(*SyncRow) Stat) (*plotutil.ErrorPoints, error) {
	var pts []plotter.XYer
	for _, c := range cases {
		r := c.Row(system)
		if r == nil || r.Skipped != "" {
			continue
		}
		if ys := positive(y(r)); len(ys) > 0 {
			pts = append(pts, samples{x: x(c), ys: ys})
		}
	}
	if len(pts) == 0 {
		return nil, nil
	}
	return plotutil.NewErrorPoints(plotutil.MedianAndMinMax, pts...)
}

func logFigure(title, xl, yl string) *figure {
	f := &figure{Plot: plot.New()}
	f.Title.Text = title
	f.X.Label.Text, f.Y.Label.Text = xl, yl
	f.X.Scale, f.Y.Scale = plot.LogScale{}, plot.LogScale{}
	f.X.Tick.Marker, f.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	f.Legend.Top, f.Legend.Left = true, true
	f.Legend.YOffs = -vg.Points(6) // clear of the title
	f.add(plotter.NewGrid())
	return f
}

// line is one series of a line plot.
type line struct {
	name   string
	system string                    // a system of the sync cases, or
	xys    plotter.XYs               // fixed points (no error bars)
	y      func(r *SyncRow) Stat     // the figure drawn
	x      func(c *SyncCase) float64 // where a case sits
}

// addLines draws each series as a line through its medians with min–max
// error bars in its colour. Colours, dashes and glyphs follow a series'
// position in the list, so they stay the same when another is empty.
func addLines(f *figure, cases []*SyncCase, lines ...line) error {
	for i, l := range lines {
		var xys plotter.XYer = l.xys
		var bars *plotter.YErrorBars
		if l.system != "" {
			ep, err := errorPoints(cases, l.system, l.x, l.y)
			if err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
			if ep == nil {
				continue
			}
			if bars, err = plotter.NewYErrorBars(ep); err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
			bars.Color = plotutil.Color(i)
			xys = ep
		} else if len(l.xys) == 0 {
			continue
		}
		ln, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		ln.Color, ln.Dashes = plotutil.Color(i), plotutil.Dashes(i)
		pts.Color, pts.Shape = plotutil.Color(i), plotutil.Shape(i)
		f.add(ln, pts)
		if bars != nil {
			f.add(bars)
		}
		f.Legend.Add(l.name, ln, pts)
	}
	return nil
}

func bytesVsD(r *Results) (*figure, error) {
	f := logFigure(fmt.Sprintf("Bytes on the wire vs d (n = %d, loopback; median, min–max bars)", r.ScaleD[0].N), "d (changed records)", "bytes on the wire")
	wire := func(r *SyncRow) Stat { return r.WireBytes }
	d := func(c *SyncCase) float64 { return float64(c.D) }
	var ideal plotter.XYs
	for _, c := range r.ScaleD {
		if c.Ideal > 0 {
			ideal = append(ideal, plotter.XY{X: float64(c.D), Y: float64(c.Ideal)})
		}
	}
	if err := addLines(f, r.ScaleD,
		line{name: "Arbor, retained base", system: sysRetained, x: d, y: wire},
		line{name: "Arbor, walk", system: sysWalk, x: d, y: wire},
		line{name: "rsync of sorted dump", system: sysRsync, x: d, y: wire},
		line{name: "full copy", system: sysFullCopy, x: d, y: wire},
		line{name: "ideal (changed records)", xys: ideal},
	); err != nil {
		return nil, err
	}
	headroom(f.Plot)
	widen(f.Plot)
	return f, nil
}

func timeVsN(r *Results) (*figure, error) {
	f := logFigure(fmt.Sprintf("Sync time vs n (d = %d, loopback; median, min–max bars)", r.ScaleN[0].D), "n (records)", "wall time (s)")
	t := func(r *SyncRow) Stat { return r.Time }
	n := func(c *SyncCase) float64 { return float64(c.N) }
	if err := addLines(f, r.ScaleN,
		line{name: "Arbor, retained base", system: sysRetained, x: n, y: t},
		line{name: "Arbor, walk", system: sysWalk, x: n, y: t},
		line{name: "full copy (TCP)", system: sysFullCopy, x: n, y: t},
	); err != nil {
		return nil, err
	}
	headroom(f.Plot)
	widen(f.Plot)
	return f, nil
}

// floorLog is a log scale on which values below the axis minimum sit at
// the axis, so bars (which start at 0) can stand on a log axis.
type floorLog struct{}

func (floorLog) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}

// profiles draws, per link profile, each system's wall time in the same
// runs as bars grouped by profile, on a log scale, with min–max error
// bars. With several d, the first d's cases are drawn.
func profiles(r *Results) (*figure, error) {
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
	f := &figure{Plot: plot.New()}
	f.Title.Text = fmt.Sprintf("Arbor against the baselines per link profile, W(%d, %d); median, min–max bars", cases[0].N, cases[0].D)
	f.Y.Label.Text = "wall time (s)"
	f.X.Label.Text = "link profile"
	f.Y.Scale, f.Y.Tick.Marker = floorLog{}, plot.LogTicks{Prec: -1}
	f.Legend.Top, f.Legend.Left = true, true
	f.Legend.YOffs = -vg.Points(6)
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0 // categories have no vertical grid lines
	f.add(grid)

	systems := []struct{ name, system string }{
		{"Arbor, retained base", sysRetained},
		{"Arbor, walk", sysWalk},
		{"rsync of sorted dump (TCP)", sysRsync},
		{"full copy (TCP)", sysFullCopy},
	}
	x := func(c *SyncCase) float64 { return 0 } // positions are set below
	t := func(r *SyncRow) Stat { return r.Time }
	type group struct {
		name   string
		colour int
		byCase []*plotutil.ErrorPoints // per case; nil where the system did not run
	}
	var groups []group
	for i, s := range systems {
		g := group{name: s.name, colour: i, byCase: make([]*plotutil.ErrorPoints, len(cases))}
		ran := false
		for j, c := range cases {
			ep, err := errorPoints([]*SyncCase{c}, s.system, x, t)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", s.name, c.Profile, err)
			}
			g.byCase[j], ran = ep, ran || ep != nil
		}
		if ran {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("no system has a figure")
	}

	// Each profile spans one unit of x; its bars share 80% of it. Bar
	// widths are lengths on the page, so they come from the page width the
	// data area gets (about 8 of the plot's 9 inches).
	const groupSpan = 0.8
	slot := groupSpan / float64(len(groups))
	width := vg.Length(float64(8*vg.Inch) / float64(len(cases)) * slot * 0.85)
	lo, hi := math.Inf(1), math.Inf(-1)
	for gi, g := range groups {
		shift := (float64(gi) - float64(len(groups)-1)/2) * slot
		var legend *plotter.BarChart
		for j, ep := range g.byCase {
			if ep == nil {
				continue
			}
			med, el := ep.XYs[0].Y, ep.YErrors[0]
			bar, err := plotter.NewBarChart(plotter.Values{med}, width)
			if err != nil {
				return nil, err
			}
			bar.XMin = float64(j) + shift
			bar.Color = plotutil.Color(g.colour)
			bar.LineStyle.Width = 0
			ep.XYs[0].X = float64(j) + shift
			bars, err := plotter.NewYErrorBars(ep)
			if err != nil {
				return nil, err
			}
			f.add(bar, bars)
			if legend == nil {
				legend = bar
			}
			lo, hi = math.Min(lo, med-el.Low), math.Max(hi, med+el.High)
		}
		f.Legend.Add(g.name, legend)
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.Profile // the links are spelled out in the report
	}
	f.NominalX(names...)
	f.X.Min, f.X.Max = -0.5, float64(len(names))-0.5
	// Bars start at 0, which a log axis cannot show: the axis starts at the
	// decade below the lowest figure, and the bars stand on it.
	f.Y.Min = math.Pow(10, math.Floor(math.Log10(lo/2)))
	f.Y.Max = hi
	headroom(f.Plot)
	return f, nil
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
