package net

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/tree"
)

// TestKilledClientResumes kills a syncing client process (SIGKILL) in the
// middle of a walk: an ordinary one, whose batches commit as it goes, and
// an initial clone written as a bulk load, whose spills are ingested as it
// goes. The store it leaves opens cleanly at the old state, and the next
// sync fetches exactly the nodes it does not hold.
func TestKilledClientResumes(t *testing.T) {
	if os.Getenv("ARBOR_KILL_CHILD") != "" {
		killChild()
		return
	}
	for _, tc := range []struct {
		name string
		bulk bool
	}{{"walk", false}, {"bulk clone", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, smallChunks, nil)
			put(t, ts.store, 0, 8000, 1)
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestKilledClientResumes$")
			cmd.Env = append(os.Environ(), "ARBOR_KILL_CHILD=1", "ARBOR_KILL_DIR="+dir, "ARBOR_KILL_ADDR="+ts.addr, "ARBOR_KILL_FP="+ts.fp)
			if tc.bulk {
				cmd.Env = append(cmd.Env, "ARBOR_KILL_BULK=1")
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			killed, bulk := false, false
			var last string
			for sc.Scan() {
				last = sc.Text()
				if last == "ready" {
					cmd.Process.Kill()
					killed = true
					break
				}
				bulk = bulk || last == "bulk"
				t.Logf("child: %s", last)
			}
			cmd.Wait()
			if !killed {
				t.Fatalf("child finished before it could be killed; its last line: %s", last)
			}
			if bulk != tc.bulk {
				t.Fatalf("child walked as a bulk load: %v", bulk)
			}

			c := openStore(t, dir, smallChunks)
			defer c.Close()
			if _, ok, _ := c.Ref(BaseRef); ok {
				t.Fatal("killed sync moved base")
			}
			all := reachable(t, ts.store, ref(t, ts.store, HeadRef))
			held := countHeld(t, c, all)
			if held == 0 {
				t.Fatal("killed walk kept nothing")
			}
			// Every node kept heads a whole subtree: the resumed walk
			// skips it on that promise.
			for _, h := range all {
				if ok, _ := c.HasNode(h); ok {
					if _, err := c.Verify(context.Background(), h); err != nil {
						t.Fatalf("node %s kept without its whole subtree: %v", h, err)
					}
				}
			}
			t.Logf("the killed walk kept %d of %d nodes", held, len(all))
			res := mustSync(t, c, ts.opts(alice))
			if res.NodesFetched != len(all)-held {
				t.Fatalf("resumed walk fetched %d nodes; %d in tree, %d held", res.NodesFetched, len(all), held)
			}
			checkConverged(t, ts, c)
		})
	}
}

// killChild runs in the child process: sync slowly, reporting progress,
// until killed.
func killChild() {
	o := &tree.Options{Chunker: smallChunks, NoSync: true}
	if os.Getenv("ARBOR_KILL_BULK") != "" {
		// A bulk load from the first node, spilled (and ingested) every
		// 32 KiB: by the kill, several spills are in the store.
		walkBulkMin = 1
		bulkHook = func() { fmt.Println("bulk") }
		o.BulkSpillBytes = 32 << 10
	}
	s, err := tree.Open(os.Getenv("ARBOR_KILL_DIR"), o)
	if err != nil {
		fmt.Println("open:", err)
		return
	}
	opts := ClientOptions{Server: os.Getenv("ARBOR_KILL_ADDR"), Token: alice, Fingerprint: os.Getenv("ARBOR_KILL_FP"), BatchNodes: 16, Parallel: 1}
	opts.Progress = func(p Progress) {
		if p.Phase == "walk" && p.Nodes >= 1500 {
			// The walk is parked in this callback: let its queued commits
			// land, then ask to be killed mid-walk.
			time.Sleep(300 * time.Millisecond)
			fmt.Println("ready")
			select {}
		}
	}
	_, err = Sync(context.Background(), s, opts)
	fmt.Println("done", err)
	time.Sleep(10 * time.Second) // wait to be killed
}
