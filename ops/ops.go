// Package ops serves an Arbor sync server's operational endpoints over
// HTTP: Prometheus metrics at /metrics, liveness at /healthz and readiness
// at /readyz. The metrics read the server's counters (net.Server.Stats) when
// they are scraped, so nothing is counted twice and nothing runs between
// scrapes; the commit-latency histogram is fed by ServerOptions.OnCommit.
//
//	m := ops.NewMetrics()
//	srv, _ := arbor.NewServer(db, arbor.ServerOptions{…, OnCommit: m.ObserveCommit})
//	m.Register(srv, ops.StoreSize(db.Store().DiskSize))
//	ready := func() error {
//		if !srv.Ready() {
//			return errors.New("not listening, or draining")
//		}
//		return nil
//	}
//	http.ListenAndServe("127.0.0.1:9090", ops.Handler(m, ready))
package ops

import (
	"fmt"
	"github.com/arbor-sync/arbor/tree"
	"net/http"
	"time"

	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every Arbor metric name.
const Namespace = "arbor"

// StatsSource is what the metrics read at scrape time: a *net.Server (or
// an *arbor.Server, which embeds one).
type StatsSource interface {
	Stats() arbornet.ServerStats
}

// Metrics is a Prometheus registry holding an Arbor server's metrics, the
// Go runtime's and the process's.
type Metrics struct {
	reg    *prometheus.Registry
	commit prometheus.Histogram
	// changesPerCommit counts the changes each commit decided.
	changesPerCommit prometheus.Histogram
}

// CommitBuckets are the commit-latency histogram's upper bounds, in
// seconds: 250 µs to about 16 s, doubling.
var CommitBuckets = prometheus.ExponentialBuckets(0.00025, 2, 17)

// NewMetrics makes a registry with the commit histograms, the Go runtime
// and process collectors. Register adds a server's counters.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "server", Name: "commit_duration_seconds",
		Help:    "Time to decide and commit one push (validation, compare-and-set, tree update, fsync).",
		Buckets: CommitBuckets,
	})
	m.changesPerCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "server", Name: "commit_changes",
		Help:    "Changes decided per committed push (accepted, overridden and rejected).",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10),
	})
	m.reg.MustRegister(m.commit, m.changesPerCommit,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveCommit records one commit; it has the signature of
// ServerOptions.OnCommit, and is safe for concurrent use.
func (m *Metrics) ObserveCommit(took time.Duration, accepted, overridden, rejected int) {
	m.commit.Observe(took.Seconds())
	m.changesPerCommit.Observe(float64(accepted + overridden + rejected))
}

// Registry returns the registry, to add collectors of one's own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// StoreOption adds store figures to Register.
type StoreOption func(*statsCollector)

// StoreSize reports the store's bytes on disk (tree.Store.DiskSize) as
// arbor_store_disk_bytes.
func StoreSize(size func() (uint64, error)) StoreOption {
	return func(c *statsCollector) { c.diskSize = size }
}

// StorePebble reports Pebble's figures (tree.Store.PebbleStats):
// compaction debt, read amplification, L0 files, tables, block cache size,
// hits and misses, memtable and WAL bytes.
func StorePebble(stats func() (tree.PebbleStats, error)) StoreOption {
	return func(c *statsCollector) { c.pebble = stats }
}

// Register adds the server's counters and gauges, read from src.Stats()
// at every scrape. Call it once per Metrics.
func (m *Metrics) Register(src StatsSource, opts ...StoreOption) error {
	c := newStatsCollector(src)
	for _, o := range opts {
		o(c)
	}
	return m.reg.Register(c)
}

// Handler serves /metrics from m, /healthz (200 while the process can
// answer at all) and /readyz (200 "ready" while ready returns nil, else 503
// with its reason). m or ready may be nil: /metrics is then absent, or
// /readyz always ready.
func Handler(m *Metrics, ready func() error) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ready != nil {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// statsCollector turns one Stats() snapshot per scrape into metrics.
type statsCollector struct {
	src      StatsSource
	diskSize func() (uint64, error)
	pebble   func() (tree.PebbleStats, error)

	sessions, handshakes, watchers, memory, retained   *prometheus.Desc
	sessionsStarted, refused, exchangesFailed, syncs   *prometheus.Desc
	bytesReceived, bytesSent, pushes, changes, refPush *prometheus.Desc
	disk                                               *prometheus.Desc
	debt, readAmp, l0, tables, cacheBytes, cacheOps    *prometheus.Desc
	memtable, wal, walWritten                          *prometheus.Desc
}

func newStatsCollector(src StatsSource) *statsCollector {
	d := func(sub, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, sub, name), help, labels, nil)
	}
	return &statsCollector{
		src:             src,
		sessions:        d("server", "sessions", "Authenticated sessions open."),
		handshakes:      d("server", "handshakes", "Connections not yet authenticated."),
		watchers:        d("server", "watchers", "Watch exchanges open (live followers)."),
		memory:          d("server", "memory_used_bytes", "Bytes held for peers: frame buffers and buffered pushes."),
		retained:        d("server", "retained_roots", "Recent roots retained for returning clients' change-based syncs."),
		sessionsStarted: d("server", "sessions_started_total", "Sessions authenticated since start."),
		refused:         d("server", "refused_total", "Connections and sessions refused, by reason (busy, unauthorized, version, config, handshake).", "reason"),
		exchangesFailed: d("server", "exchanges_failed_total", "Exchanges that ended their session with an error (a broken protocol, a limit, a stalled or vanished peer, a refused push)."),
		syncs:           d("server", "syncs_total", "Requests served, by path: walk, tree, changes (retained base), audit, push.", "path"),
		bytesReceived:   d("server", "received_bytes_total", "Bytes received over sessions, open or ended."),
		bytesSent:       d("server", "sent_bytes_total", "Bytes sent over sessions, open or ended."),
		pushes:          d("server", "pushes_total", "Pushes received."),
		changes:         d("server", "changes_total", "Pushed changes by outcome: accepted, overridden (the server's value won a compare-and-set), rejected (by validation).", "outcome"),
		refPush:         d("server", "pushes_refused_total", "Pushes refused whole because their content collides with stored content (nothing applied)."),
		disk:            d("store", "disk_bytes", "Bytes the store's files use on disk."),
		debt:            d("pebble", "compaction_debt_bytes", "Estimated bytes Pebble's compactions must still rewrite."),
		readAmp:         d("pebble", "read_amplification", "Sorted runs a read may visit: L0 sublevels plus non-empty levels."),
		l0:              d("pebble", "l0_files", "Sstables in L0."),
		tables:          d("pebble", "tables", "Live sstables in all levels."),
		cacheBytes:      d("pebble", "block_cache_bytes", "Bytes in Pebble's block cache."),
		cacheOps:        d("pebble", "block_cache_lookups_total", "Block cache lookups, by result (hit, miss).", "result"),
		memtable:        d("pebble", "memtable_bytes", "Bytes allocated by memtables."),
		wal:             d("pebble", "wal_bytes", "Live data in the write-ahead log."),
		walWritten:      d("pebble", "wal_written_bytes_total", "Bytes written to the write-ahead log since the store opened."),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.handshakes, c.watchers, c.memory, c.retained,
		c.sessionsStarted, c.refused, c.exchangesFailed, c.syncs, c.bytesReceived, c.bytesSent,
		c.pushes, c.changes, c.refPush} {
		ch <- d
	}
	if c.diskSize != nil {
		ch <- c.disk
	}
	if c.pebble != nil {
		for _, d := range []*prometheus.Desc{c.debt, c.readAmp, c.l0, c.tables, c.cacheBytes, c.cacheOps, c.memtable, c.wal, c.walWritten} {
			ch <- d
		}
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.sessions, st.Sessions)
	gauge(c.handshakes, st.Handshakes)
	gauge(c.watchers, st.Watchers)
	gauge(c.memory, st.MemoryUsed)
	gauge(c.retained, st.RetainedRoots)
	counter(c.sessionsStarted, st.SessionsStarted)
	for reason, n := range st.Refused {
		counter(c.refused, n, reason)
	}
	counter(c.exchangesFailed, st.ExchangesFailed)
	for path, n := range st.Syncs {
		counter(c.syncs, n, path)
	}
	counter(c.bytesReceived, st.BytesReceived)
	counter(c.bytesSent, st.BytesSent)
	counter(c.pushes, st.Pushes)
	// ServerStats.ChangesOverridden counts rejections too; the outcomes
	// here are disjoint, so that they sum to the changes pushed.
	counter(c.changes, st.ChangesAccepted, "accepted")
	counter(c.changes, max(st.ChangesOverridden-st.ChangesRejected, 0), "overridden")
	counter(c.changes, st.ChangesRejected, "rejected")
	counter(c.refPush, st.PushesRefused)
	if c.diskSize != nil {
		if n, err := c.diskSize(); err == nil {
			ch <- prometheus.MustNewConstMetric(c.disk, prometheus.GaugeValue, float64(n))
		}
	}
	if c.pebble != nil {
		if p, err := c.pebble(); err == nil {
			g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
			g(c.debt, float64(p.CompactionDebtBytes))
			g(c.readAmp, float64(p.ReadAmp))
			g(c.l0, float64(p.L0Files))
			g(c.tables, float64(p.Tables))
			g(c.cacheBytes, float64(p.BlockCacheBytes))
			ch <- prometheus.MustNewConstMetric(c.cacheOps, prometheus.CounterValue, float64(p.BlockCacheHits), "hit")
			ch <- prometheus.MustNewConstMetric(c.cacheOps, prometheus.CounterValue, float64(p.BlockCacheMisses), "miss")
			g(c.memtable, float64(p.MemTableBytes))
			g(c.wal, float64(p.WALBytes))
			ch <- prometheus.MustNewConstMetric(c.walWritten, prometheus.CounterValue, float64(p.WALBytesWritten))
		}
	}
}
