package main

import (
	"fmt"
	"strings"
)

// Markdown renders the results as a report: the machine, then one table per
// section, each with units, then what was skipped.
func Markdown(r *Results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Arbor benchmark report (%s suite)\n\n", r.Config.Suite)
	m := r.Machine
	p("| machine | |\n|---|---|\n")
	p("| CPU | %s |\n| cores | %d |\n| Go | %s (%s) |\n| kernel | %s |\n", m.CPU, m.Cores, m.GoVersion, m.OS, m.Kernel)
	p("| UDP buffers | net.core.rmem_max = %s B, wmem_max = %s B |\n", m.RmemMax, m.WmemMax)
	p("| Pebble sync mode | %s |\n", durability(r.Config.Sync))
	p("| rsync | %s |\n| commit | %s |\n", m.Rsync, m.Commit)
	p("| started | %s, %.1f s |\n| runs per figure | %d (median; min–max in brackets) |\n", r.Started.Format("2006-01-02 15:04 UTC"), r.Elapsed, r.Config.Runs)
	p("| workload | 16-byte keys, %d-byte pseudo-random values, seed %d, changes %s |\n\n", r.Config.ValueSize, r.Config.Seed, placement(r.Config.Clustered))

	if len(r.Store) > 0 {
		p("## Store: Arbor against raw Pebble\n\n")
		p("Same records, same run. Raw Pebble writes the records as plain key/value pairs in batches of %d, with the same block cache (64 MiB) and bloom filters; Arbor also keeps up to 256 MiB of decoded nodes. Durability: %s.\n\n", pebbleBatch, durability(r.Config.Sync))
		p("| n | figure | Arbor | raw Pebble | Arbor ÷ Pebble |\n|---:|---|---:|---:|---:|\n")
		for _, s := range r.Store {
			p("| %d | bulk build (records/s) | %s | %s | %.2f |\n", s.N, rate(s.BuildArbor), rate(s.BuildPebble), s.BuildRatio)
			p("| %d | random updates, %d in batches of %d (records/s) | %s | %s | %.2f |\n", s.N, s.Updates, pebbleBatch, rate(s.UpdateArbor), rate(s.UpdatePebble), s.UpdateRatio)
			p("| %d | point Gets, %d random keys (Gets/s) | %s | %s | %.2f |\n", s.N, s.Gets, rate(s.GetArbor), rate(s.GetPebble), s.GetRatio)
			p("| %d | sstable bytes per record after flush (B) | %s | %s | %.2f |\n", s.N, num(s.BytesPerRecordArbor, 1), num(s.BytesPerRecordPebble, 1), ratio(s.BytesPerRecordArbor.Median, s.BytesPerRecordPebble.Median))
		}
		p("\n")
	}
	if len(r.Diff) > 0 {
		p("## Diff: diff.Diff against a full scan\n\n")
		p("Both trees in one store, reopened before every run (cold node cache, warm OS page cache). The full scan iterates every record of both trees and compares them.\n\n")
		p("| n | d | changes found | diff time (ms) | nodes loaded | Nodes calls | full scan time (ms) | nodes in both trees | scan ÷ diff time |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, d := range r.Diff {
			p("| %d | %d | %d | %s | %d | %d | %s | %d | %.1f× |\n", d.N, d.D, d.Changes, ms(d.Diff), d.NodesLoaded, d.Batches, ms(d.Scan), d.ScanNodes, ratio(d.Scan.Median, d.Diff.Median))
		}
		p("\n")
	}
	if len(r.Skipped) > 0 {
		p("## Skipped\n\n")
		for _, s := range r.Skipped {
			p("- %s\n", s)
		}
		p("\n")
	}
	if len(r.Plots) > 0 {
		p("## Plots\n\n")
		for _, f := range r.Plots {
			p("- [%s](%s)\n", f, f)
		}
		p("\n")
	}
	return b.String()
}

func placement(clustered bool) string {
	if clustered {
		return "clustered in one key range"
	}
	return "scattered"
}

// rate formats a per-second Stat with its range.
func rate(s Stat) string {
	if !s.OK() {
		return "—"
	}
	if len(s.Samples) == 1 {
		return human(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", human(s.Median), human(s.Min), human(s.Max))
}

// num formats a Stat with prec decimals and its range.
func num(s Stat, prec int) string {
	if !s.OK() {
		return "—"
	}
	if len(s.Samples) == 1 {
		return fmt.Sprintf("%.*f", prec, s.Median)
	}
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.Median, prec, s.Min, prec, s.Max)
}

// ms formats a Stat of seconds as milliseconds.
func ms(s Stat) string {
	if !s.OK() {
		return "—"
	}
	f := func(x float64) string { return fmt.Sprintf("%.*f", msPrec(x*1e3), x*1e3) }
	if len(s.Samples) == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

func msPrec(x float64) int {
	switch {
	case x >= 100:
		return 0
	case x >= 10:
		return 1
	default:
		return 2
	}
}

// human formats a count with a k/M suffix.
func human(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

// mb formats bytes as MB (10^6).
func mb(x float64) string { return fmt.Sprintf("%.2f", x/1e6) }
