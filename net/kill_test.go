package net

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestKilledClientResumes kills a syncing client process (SIGKILL) in the
// middle of a walk. The store it leaves opens cleanly at the old state, and
// the next sync fetches exactly the nodes it does not hold.
func TestKilledClientResumes(t *testing.T) {
	if os.Getenv("ARBOR_KILL_CHILD") != "" {
		killChild()
		return
	}
	ts := startServer(t, smallChunks, nil)
	put(t, ts.store, 0, 8000, 1)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledClientResumes$")
	cmd.Env = append(os.Environ(), "ARBOR_KILL_CHILD=1", "ARBOR_KILL_DIR="+dir, "ARBOR_KILL_ADDR="+ts.addr, "ARBOR_KILL_FP="+ts.fp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	killed := false
	var last string
	for sc.Scan() {
		last = sc.Text()
		if last == "ready" {
			cmd.Process.Kill()
			killed = true
			break
		}
		t.Logf("child: %s", last)
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child finished before it could be killed; its last line: %s", last)
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
	res := mustSync(t, c, ts.opts(alice))
	if res.NodesFetched != len(all)-held {
		t.Fatalf("resumed walk fetched %d nodes; %d in tree, %d held", res.NodesFetched, len(all), held)
	}
	checkConverged(t, ts, c)
}

// killChild runs in the child process: sync slowly, reporting progress,
// until killed.
func killChild() {
	s := openStore(&testing.T{}, os.Getenv("ARBOR_KILL_DIR"), smallChunks)
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
	_, err := Sync(context.Background(), s, opts)
	fmt.Println("done", err)
	time.Sleep(10 * time.Second) // wait to be killed
}
