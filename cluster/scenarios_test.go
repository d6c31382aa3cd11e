package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// write is one client's change to one key in one round; value nil: deleted.
type modelWrite struct {
	client, round int
	value         *string
	overridden    bool // the client was told the server's value won
}

// testConcurrentPushesModel: 20 clients push overlapping random edits
// through three servers at once, for several rounds. All converge on the
// cluster's head, and a model check finds no accepted write lost and
// every override reported: rounds are sequential, so for each key the
// final state must be one of the accepted writes of the last round that
// had any (their order within a round is the cluster's to choose), and no
// write reported overridden may be what the cluster holds.
func testConcurrentPushesModel(e *env) {
	t := e.t
	ms := []*member{e.start(nil), e.start(nil), e.start(nil)}
	const clients, rounds, keys = 20, 4, 80
	stores := make([]*tree.Store, clients)
	for i := range stores {
		stores[i] = openClient(t)
		syncVia(t, stores[i], ms[i%len(ms)], "tok-alice-0123456789")
	}
	var mu sync.Mutex
	writes := map[string][]*modelWrite{}
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(i), uint64(round)))
				ed := map[string]*string{}
				for range 8 {
					k := fmt.Sprintf("k%03d", r.IntN(keys))
					if r.IntN(5) == 0 {
						ed[k] = nil
					} else {
						ed[k] = strp(fmt.Sprintf("c%d-r%d", i, round))
					}
				}
				before := records(t, stores[i])
				for k, v := range ed {
					if _, had := before[k]; v == nil && !had {
						delete(ed, k) // deleting an absent key changes nothing: no write
					}
				}
				write(t, stores[i], ed)
				m := ms[(i+round)%len(ms)]
				res, err := arbornet.Sync(context.Background(), stores[i], m.opts("tok-alice-0123456789"))
				if err != nil {
					t.Errorf("client %d round %d via %s: %v", i, round, m.addr, err)
					return
				}
				over := map[string]bool{}
				for _, o := range res.Overridden {
					over[string(o.Key)] = true
				}
				mu.Lock()
				defer mu.Unlock()
				for k, v := range ed {
					writes[k] = append(writes[k], &modelWrite{client: i, round: round, value: v, overridden: over[k]})
					delete(over, k)
				}
				for k := range over {
					t.Errorf("client %d round %d: told %q was overridden, which it did not change", i, round, k)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	// The head as etcd holds it now: ms[0] may not have heard yet of the
	// last commit another server acknowledged.
	if err := ms[0].c.Current(context.Background()); err != nil {
		t.Fatal(err)
	}
	head := ms[0].c.State().Head
	e.waitHead(head)
	final := map[string]string{}
	for i, s := range stores {
		syncVia(t, s, ms[i%len(ms)], "tok-alice-0123456789")
		if r, _ := s.Root(arbornet.HeadRef); r != head {
			t.Fatalf("client %d at %s, cluster head %s", i, r.Short(), head.Short())
		}
		if i == 0 {
			final = records(t, s)
		}
	}
	var accepted, overridden int
	for k, ws := range writes {
		last := -1
		for _, w := range ws {
			if w.overridden {
				overridden++
				continue
			}
			accepted++
			last = max(last, w.round)
		}
		got, has := final[k]
		if last < 0 {
			// Every write to k was overridden: another client's accepted
			// write or delete must explain the state, but none exists,
			// so k must be as it started: absent.
			if has {
				t.Errorf("key %s: every write was overridden, yet it holds %q", k, got)
			}
			continue
		}
		ok := false
		for _, w := range ws {
			if w.overridden || w.round != last {
				continue
			}
			if (w.value == nil && !has) || (w.value != nil && has && *w.value == got) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("key %s holds %q (present %v): not an accepted write of round %d, the last that wrote it", k, got, has, last)
		}
		for _, w := range ws {
			if w.overridden && w.value != nil && has && *w.value == got {
				t.Errorf("key %s holds %q, which client %d was told the server overrode", k, got, w.client)
			}
		}
	}
	var conflicts int64
	for _, m := range ms {
		conflicts += m.c.Stats().Conflicts
	}
	t.Logf("%d clients × %d rounds: %d writes accepted, %d overridden (reported); %d commit races lost and re-merged", clients, rounds, accepted, overridden, conflicts)
	if accepted == 0 || overridden == 0 {
		t.Fatalf("the workload did not exercise both accepted and overridden writes (%d, %d)", accepted, overridden)
	}
}

// testWatchAcrossServers: a client watching through one server hears of a
// push committed through another. The announcement's latency is logged;
// its target (100 ms on loopback) is a benchmark figure, not asserted here.
func testWatchAcrossServers(e *env) {
	t := e.t
	a, b := e.start(nil), e.start(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	roots := make(chan node.Hash, 16)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- arbornet.Watch(ctx, b.opts("tok-bob-0123456789"), func(r node.Hash) error {
			roots <- r
			return nil
		})
	}()
	select {
	case <-roots: // the current root, at once
	case err := <-watchDone:
		t.Fatalf("watch through %s: %v", b.addr, err)
	case <-time.After(10 * time.Second):
		t.Fatal("watch gave no first root")
	}
	cl := openClient(t)
	syncVia(t, cl, a, "tok-alice-0123456789")
	var lat []time.Duration
	for i := range 5 {
		write(t, cl, map[string]*string{fmt.Sprintf("w%d", i): strp("v")})
		res := syncVia(t, cl, a, "tok-alice-0123456789")
		acked := time.Now()
		for {
			select {
			case r := <-roots:
				if r != res.Root {
					continue // an intermediate root
				}
				lat = append(lat, time.Since(acked))
			case err := <-watchDone:
				t.Fatalf("watch ended: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatalf("push %d through %s (root %s) never announced through %s", i, a.addr, res.Root.Short(), b.addr)
			}
			break
		}
	}
	t.Logf("announcement through another server, after the push's acknowledgement: %v", lat)
}

// testEtcdMemberDown: with one etcd member stopped (the leader, the worst
// case), pushes and pulls through every server go on; when it returns,
// it catches up and the cluster still works.
func testEtcdMemberDown(e *env) {
	t := e.t
	a, b := e.start(nil), e.start(nil)
	alice, bob := openClient(t), openClient(t)
	syncVia(t, alice, a, "tok-alice-0123456789")
	syncVia(t, bob, b, "tok-bob-0123456789")
	leader := e.etcd.Leader()
	if leader < 0 {
		t.Fatal("etcd has no leader")
	}
	e.etcd.StopMember(leader)
	restarted := false
	defer func() {
		if !restarted {
			e.etcd.RestartMember(leader)
		}
	}()
	for i := range 3 {
		write(t, alice, map[string]*string{fmt.Sprintf("a%d", i): strp("x")})
		syncVia(t, alice, a, "tok-alice-0123456789")
		syncVia(t, bob, b, "tok-bob-0123456789")
		if got := records(t, bob); got[fmt.Sprintf("a%d", i)] != "x" {
			t.Fatalf("with etcd member %d down: bob lacks alice's write %d", leader, i)
		}
	}
	e.etcd.RestartMember(leader)
	restarted = true
	write(t, bob, map[string]*string{"b": strp("y")})
	syncVia(t, bob, b, "tok-bob-0123456789")
	syncVia(t, alice, a, "tok-alice-0123456789")
	if got := records(t, alice); got["b"] != "y" || len(got) != 4 {
		t.Fatalf("after etcd member %d returned: alice has %v", leader, got)
	}
}

// testS3Down: while S3 is stopped, a push fails with an error that says
// what failed, the head does not move, and the client keeps its write;
// pulls of what the servers have cached go on. Nothing of the failed push
// appears later by itself; once S3 is back the client's next sync pushes
// it and other servers serve it.
func testS3Down(e *env) {
	t := e.t
	a, b := e.start(nil), e.start(nil)
	alice, bob := openClient(t), openClient(t)
	syncVia(t, alice, a, "tok-alice-0123456789")
	write(t, alice, map[string]*string{"before": strp("1")})
	syncVia(t, alice, a, "tok-alice-0123456789")
	syncVia(t, bob, b, "tok-bob-0123456789") // b has cached the head
	head := a.c.State().Head

	e.s3.Stop()
	started := false
	defer func() {
		if !started {
			e.s3.Start()
		}
	}()
	write(t, alice, map[string]*string{"during": strp("2")})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	pushStart := time.Now()
	_, err := arbornet.Sync(ctx, alice, a.opts("tok-alice-0123456789"))
	cancel()
	if err == nil {
		t.Fatal("a push with S3 stopped succeeded")
	}
	t.Logf("push with S3 down failed after %v: %v", time.Since(pushStart).Round(time.Millisecond), err)
	if !errors.Is(err, arbornet.ErrRemote) {
		t.Fatalf("push with S3 down: %v; want the server's report (ErrRemote)", err)
	}
	if got := records(t, alice); got["during"] != "2" {
		t.Fatalf("the client lost its unpushed write: %v", got)
	}
	// Pulls of cached state go on through the other server.
	if _, err := arbornet.Sync(context.Background(), bob, b.opts("tok-bob-0123456789")); err != nil {
		t.Fatalf("pull of a cached head with S3 down: %v", err)
	}
	if st := b.c.State(); st.Head != head {
		t.Fatalf("the head moved to %s during the S3 outage (was %s)", st.Head.Short(), head.Short())
	}
	e.s3.Start()
	started = true
	// Nothing of the failed push appears by itself.
	time.Sleep(200 * time.Millisecond)
	if st := b.c.State(); st.Head != head {
		t.Fatalf("the failed push appeared after S3 returned: head %s, was %s", st.Head.Short(), head.Short())
	}
	res := syncVia(t, alice, a, "tok-alice-0123456789")
	if res.Accepted != 1 {
		t.Fatalf("after S3 returned, alice's sync accepted %d changes, want 1", res.Accepted)
	}
	syncVia(t, bob, b, "tok-bob-0123456789")
	if got := records(t, bob); got["during"] != "2" || got["before"] != "1" {
		t.Fatalf("after S3 returned: bob has %v", got)
	}
}

// testServersStartTogether: servers that start at the same moment on a
// new cluster race to store its certificate; every one of them starts,
// and all present the winner's.
func testServersStartTogether(e *env) {
	t := e.t
	ctx := context.Background()
	const n = 4
	fps := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Open(ctx, e.options(filepath.Join(t.TempDir(), "server")))
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			srv, err := c.NewServer(ctx, arbornet.ServerOptions{Tokens: testTokens})
			if err != nil {
				errs[i] = err
				return
			}
			fps[i] = srv.Fingerprint()
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		if fps[i] != fps[0] {
			t.Fatalf("server %d presents %s, server 0 %s", i, fps[i], fps[0])
		}
	}
}
