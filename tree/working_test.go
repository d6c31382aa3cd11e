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
