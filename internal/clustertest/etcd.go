package clustertest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Raft timing for loopback. etcd's defaults (100 ms ticks, 1 s election
// timeout) are sized for real networks; these elect a leader in a few
// hundred milliseconds while leaving room for a loaded 2-core machine,
// where a shorter election timeout causes spurious elections.
const (
	etcdTickMs     = 25
	etcdElectionMs = 250
)

// etcdStartTimeout bounds the wait for a started or restarted member to
// join its cluster and serve.
const etcdStartTimeout = 30 * time.Second

// Etcd is an in-process etcd cluster whose members listen on 127.0.0.1.
// Create it with StartEtcd; it shuts down in t.Cleanup.
type Etcd struct {
	t       testing.TB
	mu      sync.Mutex
	members []*etcdMember
}

type etcdMember struct {
	name      string
	dir       string
	logPath   string
	peerURL   url.URL
	clientURL url.URL
	cluster   string // the initial-cluster string it was created with
	e         *embed.Etcd
}

// StartEtcd starts an etcd cluster of members members (1, 3 and 5 are the
// useful sizes) on free loopback ports, waits until it has a leader and
// every member serves linearizable reads, and stops it in t.Cleanup.
// Each member's log (level error) goes to a file under t.TempDir(),
// printed with t.Log if the test fails.
func StartEtcd(t testing.TB, members int) *Etcd {
	t.Helper()
	if members < 1 {
		t.Fatalf("clustertest: StartEtcd: %d members; need at least 1", members)
	}
	// TempDir before Cleanup: cleanups run last-registered first, and the
	// members must stop before their data dirs are removed.
	base := t.TempDir()
	c := &Etcd{t: t}
	t.Cleanup(c.cleanup)
	start := time.Now()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		err := c.startAll(filepath.Join(base, fmt.Sprintf("try%d", attempt)), members)
		if err == nil {
			break
		}
		c.closeAll()
		if !isAddrInUse(err) || attempt == attempts {
			c.dumpLogs()
			t.Fatalf("clustertest: start %d-member etcd: %v", members, err)
		}
		t.Logf("clustertest: etcd port taken before bind, retrying with new ports: %v", err)
	}
	if err := c.waitServing(); err != nil {
		c.dumpLogs()
		t.Fatalf("clustertest: %d-member etcd: %v", members, err)
	}
	t.Logf("clustertest: %d-member etcd serving in %v at %s", members, time.Since(start).Round(time.Millisecond), strings.Join(c.Endpoints(), ","))
	return c
}

// startAll creates the members under base and starts each one; it does not
// wait for them to form a cluster.
func (c *Etcd) startAll(base string, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	c.members = make([]*etcdMember, n)
	var cluster []string
	for i := range c.members {
		m := &etcdMember{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(base, fmt.Sprintf("m%d", i)),
			logPath:   filepath.Join(base, fmt.Sprintf("m%d.log", i)),
			peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])},
			clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])},
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return fmt.Errorf("create data dir of etcd member %d: %w", i, err)
		}
		c.members[i] = m
		cluster = append(cluster, m.name+"="+m.peerURL.String())
	}
	for i, m := range c.members {
		m.cluster = strings.Join(cluster, ",")
		e, err := embed.StartEtcd(m.config())
		if err != nil {
			return fmt.Errorf("start etcd member %d (peer %s, client %s): %w", i, m.peerURL.Host, m.clientURL.Host, err)
		}
		m.e = e
	}
	return nil
}

func (m *etcdMember) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.InitialCluster = m.cluster
	cfg.InitialClusterToken = "arbor-clustertest"
	// Ignored once the data dir holds a member, as on RestartMember.
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.TickMs = etcdTickMs
	cfg.ElectionMs = etcdElectionMs
	// Data lives in a temp dir for one test: durability across a machine
	// crash is not needed, and fsync dominates write latency otherwise.
	cfg.UnsafeNoFsync = true
	cfg.EnableGRPCGateway = false
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{m.logPath}
	return cfg
}

// waitServing waits until every running member has joined the cluster and
// answers a linearizable read through its own client URL.
func (c *Etcd) waitServing() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.e == nil {
			continue
		}
		if err := m.waitServing(i); err != nil {
			return err
		}
	}
	return nil
}

func (m *etcdMember) waitServing(i int) error {
	timer := time.NewTimer(etcdStartTimeout)
	defer timer.Stop()
	select {
	case <-m.e.Server.ReadyNotify():
	case err := <-m.e.Err():
		return fmt.Errorf("etcd member %d failed before it was ready: %w", i, err)
	case <-timer.C:
		return fmt.Errorf("etcd member %d not ready after %v (no quorum?)", i, etcdStartTimeout)
	}
	cli, err := newEtcdClient([]string{m.clientURL.String()})
	if err != nil {
		return fmt.Errorf("client for etcd member %d: %w", i, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), etcdStartTimeout)
	defer cancel()
	for {
		_, err := cli.Get(ctx, "clustertest/ready")
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("etcd member %d does not serve reads: %w", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Endpoints returns every member's client URL (http://127.0.0.1:port), in
// member order, stopped members included.
func (c *Etcd) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL.String()
	}
	return eps
}

// Endpoint returns member i's client URL.
func (c *Etcd) Endpoint(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(i).clientURL.String()
}

// Members returns the number of members, stopped ones included.
func (c *Etcd) Members() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

// Client returns a client balanced over all endpoints; it is closed in
// t.Cleanup.
func (c *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return c.client(t, c.Endpoints())
}

// MemberClient returns a client that talks to member i only; it is closed
// in t.Cleanup.
func (c *Etcd) MemberClient(t testing.TB, i int) *clientv3.Client {
	t.Helper()
	return c.client(t, []string{c.Endpoint(i)})
}

func (c *Etcd) client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := newEtcdClient(endpoints)
	if err != nil {
		t.Fatalf("clustertest: etcd client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the index of the member that is raft leader as seen by
// the first running member, or -1 if none is running or no leader is known.
func (c *Etcd) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.e == nil {
			continue
		}
		lead := m.e.Server.Leader()
		for j, o := range c.members {
			if o.e != nil && o.e.Server.MemberID() == lead {
				return j
			}
		}
		return -1
	}
	return -1
}

// StopMember stops member i gracefully (a leader hands leadership to a
// peer first) and closes its listeners; its data dir is kept for
// RestartMember. Stopping a stopped member does nothing.
func (c *Etcd) StopMember(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(i)
	if m.e == nil {
		return
	}
	m.e.Close()
	m.e = nil
}

// KillMember stops member i abruptly, as a crash would: no leadership
// transfer and no goodbye to its peers (its listeners are still closed and
// its data dir is kept for RestartMember). Killing a stopped member does
// nothing.
func (c *Etcd) KillMember(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(i)
	if m.e == nil {
		return
	}
	hardClose(m.e)
	m.e = nil
}

// RestartMember starts stopped or killed member i again on the same ports and data
// dir and waits until it serves, which needs a quorum of running members.
// Restarting a running member does nothing.
func (c *Etcd) RestartMember(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(i)
	if m.e != nil {
		return
	}
	// The ports were free while the member ran; something else may have
	// grabbed one since, or a closed connection may linger: retry a while.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := embed.StartEtcd(m.config())
		if err == nil {
			m.e = e
			break
		}
		if !isAddrInUse(err) || time.Now().After(deadline) {
			c.dumpLogs()
			c.t.Fatalf("clustertest: restart etcd member %d (peer %s, client %s): %v", i, m.peerURL.Host, m.clientURL.Host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := m.waitServing(i); err != nil {
		c.dumpLogs()
		c.t.Fatalf("clustertest: restart etcd member %d: %v", i, err)
	}
}

func (c *Etcd) member(i int) *etcdMember {
	c.t.Helper()
	if i < 0 || i >= len(c.members) {
		c.t.Fatalf("clustertest: etcd member %d out of range [0,%d)", i, len(c.members))
	}
	return c.members[i]
}

// closeAll kills every running member at once. Closing them gracefully
// in parallel is slow: a leader tries to hand leadership to a peer that is
// shutting down too, and waits for the request timeout (over 5 s).
func (c *Etcd) closeAll() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		if m == nil || m.e == nil {
			continue
		}
		wg.Add(1)
		go func(e *embed.Etcd) {
			defer wg.Done()
			hardClose(e)
		}(m.e)
		m.e = nil
	}
	wg.Wait()
}

// hardClose stops e's raft node without talking to its peers, as a crash
// would, then closes its listeners and waits for its goroutines.
func hardClose(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

func (c *Etcd) cleanup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeAll()
	if c.t.Failed() {
		c.dumpLogs()
	}
}

// dumpLogs prints the tail of each member's log file.
func (c *Etcd) dumpLogs() {
	for i, m := range c.members {
		if m == nil {
			continue
		}
		if tail := fileTail(m.logPath, 16<<10); tail != "" {
			c.t.Logf("clustertest: etcd member %d log (%s):\n%s", i, m.logPath, tail)
		}
	}
}

// fileTail returns up to the last max bytes of the file at path, or "" if
// it cannot be read.
func fileTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}
