package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/arbor-sync/arbor/bench/linkemu"
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
	p("| workload | W(n, d): 16-byte keys, %d-byte pseudo-random values, seed %d; d changes (60%% updates, 20%% inserts, 20%% deletes) %s |\n\n", r.Config.ValueSize, r.Config.Seed, placement(r.Config.Clustered))

	if v := verdicts(r); len(v) > 0 {
		p("## Verdicts\n\nComputed from the medians below.\n\n")
		for _, s := range v {
			p("- %s\n", s)
		}
		p("\n")
	}
	if len(r.Store) > 0 {
		p("## Store: Arbor against raw Pebble\n\n")
		p("Same records, same run. Raw Pebble writes the records as plain key/value pairs in batches of %d, with exactly an Arbor store's Pebble options (128 MiB block cache including two 32 MiB memtables, bloom filters, value separation of values of 256 bytes or more); Arbor also keeps up to 256 MiB of decoded nodes. Durability: %s.\n\n", pebbleBatch, durability(r.Config.Sync))
		p("| n | figure | Arbor | raw Pebble | Arbor ÷ Pebble |\n|---:|---|---:|---:|---:|\n")
		for _, s := range r.Store {
			p("| %d | bulk build (records/s) | %s | %s | %.2f |\n", s.N, rate(s.BuildArbor), rate(s.BuildPebble), s.BuildRatio)
			p("| %d | random updates, %d in batches of %d, each durable at its commit (records/s) | %s | %s | %.2f |\n", s.N, s.Updates, pebbleBatch, rate(s.UpdateWriteArbor), rate(s.UpdatePebble), ratio(s.UpdateWriteArbor.Median, s.UpdatePebble.Median))
			p("| %d | the same, with the tree caught up after the last (records/s) | %s | %s | %.2f |\n", s.N, rate(s.UpdateArbor), rate(s.UpdatePebble), s.UpdateRatio)
			p("| %d | point Gets, %d random keys, first touch (Gets/s) | %s | %s | %.2f |\n", s.N, s.Gets, rate(s.GetArbor), rate(s.GetPebble), s.GetRatio)
			p("| %d | point Gets, the same keys again: warm (Gets/s) | %s | %s | %.2f |\n", s.N, rate(s.GetWarmArbor), rate(s.GetWarmPebble), s.GetWarmRatio)
			p("| %d | stored bytes per record after flush (sstables + blob files, B) | %s | %s | %.2f |\n", s.N, num(s.BytesPerRecordArbor, 1), num(s.BytesPerRecordPebble, 1), ratio(s.BytesPerRecordArbor.Median, s.BytesPerRecordPebble.Median))
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
	if len(r.Sync) > 0 {
		syncReport(p, r)
	}
	if len(r.ScaleN) > 0 || len(r.ScaleD) > 0 || len(r.Placement) > 0 {
		scalingReport(p, r)
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
	return "scattered over the key space"
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

const syncNotes = `Changes land on the server; a client at the old state pulls them ("retained base": the server still holds the client's last root and answers with a diff; "walk": the client ignores it and walks the differing subtrees, as a lost or suspicious client would). "Push" is the other direction: a client last synced at the changed side holds the base side as d local changes (the inverse edits) and uploads them; its ideal is that of the inverse edits. Every system runs in the same runs through the same kind of relay (bench/linkemu) on 127.0.0.1, in an order that rotates each run; "loopback" is the relay without shaping. After every Arbor sync the client's root must equal the server's, and after every baseline transfer the client's bytes must hash equal to the server's, or the harness fails. Bytes on the wire are what both directions offered to the link: UDP payload for QUIC (with QUIC's headers, encryption and retransmissions), TCP payload for the TCP baselines (so TCP/IP headers are not counted for them, which favours them by a few percent). The full copy streams all records from memory and stores them into raw Pebble in batches; rsync runs its delta algorithm (--ignore-times --no-whole-file) against a local rsync daemon and its time excludes making and loading the dump files. The TCP relay models loss as a retransmission one round trip late without shrinking a congestion window (see bench/linkemu), which favours the TCP baselines on the lossy profile.`

func syncReport(p func(string, ...any), r *Results) {
	p("## Sync over QUIC, Arbor against the baselines\n\n%s Client and server stores: %s.\n\n", syncNotes, durability(r.Config.Sync))
	for _, c := range r.Sync {
		p("### %s, %s: W(%d, %d), ideal %s KB, data set %s MB, runs: %d\n\n", c.Profile, c.Link, c.N, c.D, kb(float64(c.Ideal)), mb(float64(c.Dataset)), c.Runs)
		p("| system | time (ms) | bytes on the wire (KB) | wire ÷ ideal | Arbor stream bytes (KB) | round trips | records moved | time ÷ Arbor retained |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		base := c.Row(sysRetained)
		for _, row := range c.Rows {
			if row.Skipped != "" {
				p("| %s | %s | | | | | | |\n", row.System, row.Skipped)
				continue
			}
			rel := "—"
			if base != nil && base.Time.OK() {
				rel = fmt.Sprintf("%.2f", ratio(row.Time.Median, base.Time.Median))
			}
			ideal := c.Ideal
			if row.System == sysPush {
				ideal = c.PushIdeal
			}
			p("| %s | %s | %s | %.2f | %s | %s | %s | %s |\n", row.System, ms(row.Time), kb(row.WireBytes.Median), ratio(row.WireBytes.Median, float64(ideal)), optKB(row.StreamBytes), optInt(row.RoundTrips), optInt(row.Records), rel)
		}
		p("\n")
	}
	p("### Time per profile (ms, median)\n\n")
	p("| profile | link | n | d | Arbor retained | Arbor walk | full copy (TCP) | rsync | retained beats both baselines | walk beats both baselines |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, c := range r.Sync {
		p("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", c.Profile, c.Link, c.N, c.D, msRow(c.Row(sysRetained)), msRow(c.Row(sysWalk)), msRow(c.Row(sysFullCopy)), msRow(c.Row(sysRsync)), beats(c, sysRetained), beats(c, sysWalk))
	}
	p("\n")
	hasClone := false
	for _, c := range r.Sync {
		hasClone = hasClone || c.Row(sysClone) != nil
	}
	if hasClone {
		p("### Initial clone: throughput against a raw quic-go stream of the same bytes\n\n")
		p("MB/s is the data set's key and value bytes (10^6 B) over the wall time. The raw stream is one quic-go stream with default settings carrying the sorted dump, read and discarded; the clone also builds and stores the tree.\n\n")
		p("| profile | link | n | Arbor clone (MB/s) | raw quic-go stream (MB/s) | clone ÷ raw | full copy TCP into Pebble (MB/s) | clone wire bytes ÷ data set |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range r.Sync {
			cl, raw, fc := c.Row(sysClone), c.Row(sysRawQUIC), c.Row(sysFullCopy)
			if cl == nil || !cl.Time.OK() {
				continue
			}
			p("| %s | %s | %d | %.1f | %s | %s | %s | %.2f |\n", c.Profile, c.Link, c.N, float64(c.Dataset)/1e6/cl.Time.Median, mbps(c, raw), cloneRatio(cl, raw), mbps(c, fc), ratio(cl.WireBytes.Median, float64(c.Dataset)))
		}
		p("\n")
	}
}

func scalingReport(p func(string, ...any), r *Results) {
	p("## Scaling (loopback profile)\n\n")
	if len(r.ScaleN) > 0 {
		p("### Growing n at fixed d\n\n")
		p("| n | d | retained (ms) | walk (ms) | full copy (ms) | retained wire (KB) | walk wire (KB) | full copy wire (KB) | round trips retained / walk |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, c := range r.ScaleN {
			rt, wk := c.Row(sysRetained), c.Row(sysWalk)
			p("| %d | %d | %s | %s | %s | %s | %s | %s | %s / %s |\n", c.N, c.D, msRow(rt), msRow(wk), msRow(c.Row(sysFullCopy)), wireKB(rt), wireKB(wk), wireKB(c.Row(sysFullCopy)), optInt(rowRT(rt)), optInt(rowRT(wk)))
		}
		p("\n")
	}
	var clones []*SyncCase
	for _, c := range r.ScaleN {
		if cl := c.Row(sysClone); cl != nil && cl.Time.OK() {
			clones = append(clones, c)
		}
	}
	if len(clones) > 0 {
		p("### Initial clone for growing n\n\n")
		p("| n | data set (MB) | Arbor clone (ms) | Arbor clone (MB/s) | raw quic-go stream (MB/s) | clone ÷ raw | full copy TCP into Pebble (MB/s) | clone wire bytes ÷ data set | round trips |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range clones {
			cl := c.Row(sysClone)
			p("| %d | %s | %s | %.1f | %s | %s | %s | %.2f | %s |\n", c.N, mb(float64(c.Dataset)), msRow(cl), float64(c.Dataset)/1e6/cl.Time.Median, mbps(c, c.Row(sysRawQUIC)), cloneRatio(cl, c.Row(sysRawQUIC)), mbps(c, c.Row(sysFullCopy)), ratio(cl.WireBytes.Median, float64(c.Dataset)), optInt(cl.RoundTrips))
		}
		p("\n")
	}
	if len(r.ScaleD) > 0 {
		p("### Growing d at fixed n\n\n")
		p("| n | d | ideal (KB) | retained wire (KB) | walk wire (KB) | rsync wire (KB) | full copy wire (KB) | retained (ms) | walk (ms) | rsync (ms) | full copy (ms) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range r.ScaleD {
			p("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.N, c.D, kb(float64(c.Ideal)), wireKB(c.Row(sysRetained)), wireKB(c.Row(sysWalk)), wireKB(c.Row(sysRsync)), wireKB(c.Row(sysFullCopy)), msRow(c.Row(sysRetained)), msRow(c.Row(sysWalk)), msRow(c.Row(sysRsync)), msRow(c.Row(sysFullCopy)))
		}
		p("\n")
	}
	if len(r.Placement) > 0 {
		p("### Scattered against clustered changes\n\n")
		p("| n | d | changes | ideal (KB) | retained wire (KB) | walk wire (KB) | rsync wire (KB) | retained (ms) | walk (ms) | rsync (ms) | full copy (ms) |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range r.Placement {
			p("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.N, c.D, placement(c.Clustered), kb(float64(c.Ideal)), wireKB(c.Row(sysRetained)), wireKB(c.Row(sysWalk)), wireKB(c.Row(sysRsync)), msRow(c.Row(sysRetained)), msRow(c.Row(sysWalk)), msRow(c.Row(sysRsync)), msRow(c.Row(sysFullCopy)))
		}
		p("\n")
	}
}

// beats says whether system's median time beat both baselines' medians.
func beats(c *SyncCase, system string) string {
	a := c.Row(system)
	if a == nil || !a.Time.OK() {
		return "—"
	}
	var lost, against []string
	for _, b := range []string{sysFullCopy, sysRsync} {
		r := c.Row(b)
		if r == nil || !r.Time.OK() {
			continue
		}
		against = append(against, b)
		if a.Time.Median >= r.Time.Median {
			lost = append(lost, b)
		}
	}
	switch {
	case len(against) == 0:
		return "no baseline ran"
	case len(lost) == 0:
		return fmt.Sprintf("yes (%.1f× faster than the faster one)", fastest(c)/a.Time.Median)
	default:
		return "no: slower than " + strings.Join(lost, ", ")
	}
}

func fastest(c *SyncCase) float64 {
	best := 0.0
	for _, b := range []string{sysFullCopy, sysRsync} {
		if r := c.Row(b); r != nil && r.Time.OK() && (best == 0 || r.Time.Median < best) {
			best = r.Time.Median
		}
	}
	return best
}

func msRow(r *SyncRow) string {
	if r == nil {
		return "—"
	}
	if r.Skipped != "" {
		return "skipped"
	}
	if !r.Time.OK() {
		return "—"
	}
	return fmt.Sprintf("%.*f", msPrec(r.Time.Median*1e3), r.Time.Median*1e3)
}

func wireKB(r *SyncRow) string {
	if r == nil {
		return "—"
	}
	if r.Skipped != "" {
		return "skipped"
	}
	if !r.WireBytes.OK() {
		return "—"
	}
	return kb(r.WireBytes.Median)
}

func rowRT(r *SyncRow) int {
	if r == nil {
		return 0
	}
	return r.RoundTrips
}

func mbps(c *SyncCase, r *SyncRow) string {
	if r == nil || !r.Time.OK() {
		return "—"
	}
	return fmt.Sprintf("%.1f", float64(c.Dataset)/1e6/r.Time.Median)
}

func cloneRatio(cl, raw *SyncRow) string {
	if raw == nil || !raw.Time.OK() {
		return "—"
	}
	return fmt.Sprintf("%.2f", raw.Time.Median/cl.Time.Median)
}

func kb(x float64) string {
	if x >= 1e5 {
		return fmt.Sprintf("%.0f", x/1e3)
	}
	return fmt.Sprintf("%.1f", x/1e3)
}

func optKB(x int64) string {
	if x == 0 {
		return "—"
	}
	return kb(float64(x))
}

func optInt(x int) string {
	if x == 0 {
		return "—"
	}
	return fmt.Sprint(x)
}

// verdicts states, for every sync case on a shaped WAN-like profile (RTT ≥
// 10 ms) with d ≤ n/100, whether Arbor beat the full copy and rsync.
func verdicts(r *Results) []string {
	var out []string
	for _, c := range r.Sync {
		var prof linkemu.Profile
		for _, p := range r.Config.Profiles {
			if p.Name == c.Profile {
				prof = p
			}
		}
		if prof.RTT < 10*time.Millisecond || c.D*100 > c.N {
			continue
		}
		for _, sys := range []string{sysRetained, sysWalk, sysPush} {
			if row := c.Row(sys); row != nil && row.Time.OK() {
				out = append(out, fmt.Sprintf("%s, W(%d, %d), %s: %s.", c.Profile, c.N, c.D, sys, beatsVerdict(c, sys)))
			}
		}
	}
	return out
}

func beatsVerdict(c *SyncCase, sys string) string {
	b := beats(c, sys)
	if rest, ok := strings.CutPrefix(b, "yes ("); ok {
		return "beats both baselines (" + rest
	}
	if rest, ok := strings.CutPrefix(b, "no: "); ok {
		return "does not beat both baselines: " + rest
	}
	return b
}
