package tree

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/node"
)

func openWorking(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	o.WorkingRef = "head"
	o.Chunker = smallConfig
	s, err := Open(dir, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestWorkingSetModel: writes through the working set, direct tree updates
// of the same ref, lookups and root reads, in random order, against a Go
// map: every lookup sees every acknowledged write at once, and every root
// is the bulk build of the model (history independence holds).
func TestWorkingSetModel(t *testing.T) {
	ctx := context.Background()
	s := openWorking(t, t.TempDir(), Options{NoSync: true, WorkingBytes: 2 << 10, WorkingDelay: time.Millisecond})
	ref := openTest(t, smallConfig) // where the model's roots are built
	r := rand.New(rand.NewPCG(3, 4))
	model := map[string]string{}
	for step := range 600 {
		var edits []Edit
		for range 1 + r.IntN(5) {
			k := fmt.Sprintf("k%03d", r.IntN(300))
			if r.IntN(4) == 0 {
				edits = append(edits, Edit{Key: []byte(k), Delete: true})
				continue
			}
			v := fmt.Sprintf("v%d-%d", step, r.IntN(1000))
			if r.IntN(50) == 0 {
				v = string(make([]byte, 70<<10)) // over 64 KiB: applied at once
			}
			edits = append(edits, Edit{Key: []byte(k), Value: []byte(v)})
		}
		switch r.IntN(10) {
		case 0:
			if _, err := s.Update(ctx, "head", edits); err != nil {
				t.Fatal(err)
			}
		default:
			if err := s.Write(ctx, edits); err != nil {
				t.Fatal(err)
			}
		}
		for _, e := range edits {
			if e.Delete {
				delete(model, string(e.Key))
			} else {
				model[string(e.Key)] = string(e.Value)
			}
		}
		k := fmt.Sprintf("k%03d", r.IntN(300))
		v, err := s.Lookup(ctx, "head", []byte(k))
		want, ok := model[k]
		if (err == nil) != ok || (ok && string(v) != want) || (err != nil && !errors.Is(err, ErrNotFound)) {
			t.Fatalf("step %d: Lookup %s = %q, %v; want %q (present %v)", step, k, v, err, want, ok)
		}
		if r.IntN(40) == 0 {
			got, err := s.Root("head")
			if err != nil {
				t.Fatal(err)
			}
			if want := build(t, ref, model); got != want {
				t.Fatalf("step %d: root %s, the model's %s", step, got.Short(), want.Short())
			}
		}
	}
	got, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	if want := build(t, ref, model); got != want {
		t.Fatalf("final root %s, the model's %s", got.Short(), want.Short())
	}
	if _, err := s.Verify(ctx, got); err != nil {
		t.Fatal(err)
	}
}

// TestWorkingSetSurvivesReopen: writes acknowledged by Write are there
// after a reopen even if no catch-up ran (the store is closed without
// one, as a crash would), and a store opened without a working ref still
// applies them to the ref they were written for.
func TestWorkingSetSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "head", WorkingDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	for i := range 50 {
		k, v := fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i)
		if err := s.Write(ctx, []Edit{{Key: []byte(k), Value: []byte(v)}}); err != nil {
			t.Fatal(err)
		}
		model[k] = v
	}
	// Close without applying: what a kill between a write and its
	// catch-up leaves (the crash test kills real processes).
	s.work.ref = ""
	close(s.work.stop)
	<-s.work.done
	if root, ok, _ := s.rawRef("head"); ok && root != node.EmptyRoot(node.XXH3) {
		t.Fatal("the tree caught up although no catch-up ran")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{}) // no working ref: the edits still belong to "head"
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	root, err := s2.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	if want := build(t, openTest(t, smallConfig), model); root != want {
		t.Fatalf("after reopen: root %s, want %s", root.Short(), want.Short())
	}
	if err := s2.Write(ctx, []Edit{{Key: []byte("x"), Value: []byte("y")}}); !errors.Is(err, ErrNoWorkingSet) {
		t.Fatalf("Write without a working ref: %v, want ErrNoWorkingSet", err)
	}
}

// TestWorkingSetConcurrent: writers, readers and catch-ups at once (run
// with -race); afterwards the root is the model's.
func TestWorkingSetConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openWorking(t, filepath.Join(t.TempDir(), "s"), Options{NoSync: true, WorkingBytes: 1 << 10, WorkingDelay: time.Millisecond})
	const writers, each = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := []byte(fmt.Sprintf("w%d-%03d", w, i))
				if err := s.Write(ctx, []Edit{{Key: k, Value: k}}); err != nil {
					t.Error(err)
					return
				}
				if v, err := s.Lookup(ctx, "head", k); err != nil || string(v) != string(k) {
					t.Errorf("own write not visible: %q, %v", v, err)
					return
				}
				if i%50 == 0 {
					if _, err := s.Root("head"); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	model := map[string]string{}
	for w := range writers {
		for i := range each {
			k := fmt.Sprintf("w%d-%03d", w, i)
			model[k] = k
		}
	}
	root, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	if want := build(t, openTest(t, smallConfig), model); root != want {
		t.Fatalf("root %s, want %s", root.Short(), want.Short())
	}
}

// TestWorkingSetBackpressure: when writes outrun the catch-up (here the
// background one is stopped), a write waits for a catch-up once the set
// holds maxWorkingFactor × WorkingBytes, so its memory stays bounded.
func TestWorkingSetBackpressure(t *testing.T) {
	ctx := context.Background()
	s := openWorking(t, t.TempDir(), Options{NoSync: true, WorkingBytes: 1 << 10, WorkingDelay: time.Hour})
	s.work.closeOnce.Do(func() { close(s.work.stop) }) // no background catch-up
	<-s.work.done
	most := 0
	for i := range 2000 {
		k := []byte(fmt.Sprintf("k%05d", i))
		if err := s.Write(ctx, []Edit{{Key: k, Value: make([]byte, 100)}}); err != nil {
			t.Fatal(err)
		}
		s.work.mu.Lock()
		most = max(most, s.work.bytes)
		s.work.mu.Unlock()
	}
	if limit := maxWorkingFactor*(1<<10) + 200; most > limit {
		t.Fatalf("the working set held %d bytes (bound %d)", most, limit)
	}
	if n, err := s.Count(ctx, mustRoot(t, s)); err != nil || n != 2000 {
		t.Fatalf("count %d, %v", n, err)
	}
}

func mustRoot(t *testing.T, s *Store) node.Hash {
	t.Helper()
	r, err := s.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWorkingSetCatchUpAfterPause: while writes stream in, the background
// catch-up waits for them to pause for WorkingDelay (no catch-up between
// writes a few milliseconds apart), and then applies them all; writes that
// never pause are applied maxWorkingDelayFactor × WorkingDelay after the
// first of them.
func TestWorkingSetCatchUpAfterPause(t *testing.T) {
	ctx := context.Background()
	const delay = 100 * time.Millisecond
	s := openWorking(t, t.TempDir(), Options{NoSync: true, WorkingDelay: delay})
	moved := func() bool {
		_, ok, err := s.rawRef("head")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// stream writes one every 2 ms for d; it reports whether the writer
	// kept that pace (a starved writer pauses, and then a catch-up may run).
	stream := func(d time.Duration, prefix string) (steady bool) {
		steady = true
		last := time.Now()
		for i := 0; time.Since(last) < d || i == 0; i++ {
			start := time.Now()
			k := []byte(fmt.Sprintf("%s%05d", prefix, i))
			if err := s.Write(ctx, []Edit{{Key: k, Value: k}}); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				last = start
			}
			time.Sleep(2 * time.Millisecond)
			if time.Since(start) > delay/4 {
				steady = false
			}
		}
		return steady
	}

	changed := s.RefsChanged()
	steady := stream(4*delay, "a")
	if steady && moved() {
		t.Fatalf("a catch-up ran while writes streamed in (%v between them, WorkingDelay %v)", 2*time.Millisecond, delay)
	}
	select {
	case <-changed:
	case <-time.After(5 * delay):
		t.Fatalf("no catch-up %v after the writes paused (WorkingDelay %v)", 5*delay, delay)
	}
	if v, err := s.Lookup(ctx, "head", []byte("a00000")); err != nil || string(v) != "a00000" {
		t.Fatalf("lookup %q, %v", v, err)
	}
	s.work.mu.Lock()
	pending := len(s.work.cur)
	s.work.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d edits left in the working set after the catch-up", pending)
	}

	// Writes that never pause still reach the tree within the bound.
	changed = s.RefsChanged()
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream(20*delay, "b") // longer than maxWorkingDelayFactor × delay
	}()
	select {
	case <-changed:
	case <-done:
		t.Fatalf("no catch-up during %v of writes (bound %v)", 20*delay, maxWorkingDelayFactor*delay)
	}
	<-done
}

// TestWorkingSetRepeatedKeyInOneWrite: Write records a write's edits in
// key order, yet a later edit of a key within one write still wins, in
// memory, after a reopen without a catch-up (the order on disk) and in
// the tree.
func TestWorkingSetRepeatedKeyInOneWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "head", WorkingDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	edits := []Edit{
		{Key: []byte("m"), Value: []byte("first")},
		{Key: []byte("z"), Value: []byte("z")},
		{Key: []byte("a"), Value: []byte("a")},
		{Key: []byte("m"), Value: []byte("second")},
		{Key: []byte("d"), Value: []byte("gone")},
		{Key: []byte("d"), Delete: true},
		{Key: []byte("m"), Value: []byte("third")},
	}
	if err := s.Write(ctx, edits); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "a", "m": "third", "z": "z"}
	check := func(s *Store, when string) {
		t.Helper()
		for k, v := range want {
			if got, err := s.Lookup(ctx, "head", []byte(k)); err != nil || string(got) != v {
				t.Fatalf("%s: %s = %q, %v; want %q", when, k, got, err, v)
			}
		}
		if _, err := s.Lookup(ctx, "head", []byte("d")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: deleted key: %v", when, err)
		}
	}
	check(s, "in the working set")
	// Close without a catch-up, as a crash would leave it.
	s.work.ref = ""
	close(s.work.stop)
	<-s.work.done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "head", WorkingDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, "after the reopen")
	root, err := s2.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	if wantRoot := build(t, openTest(t, smallConfig), want); root != wantRoot {
		t.Fatalf("root %s, want %s", root.Short(), wantRoot.Short())
	}
}
