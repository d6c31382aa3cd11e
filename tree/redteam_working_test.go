package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/internal/xxh3collide"
)

// Red-team tests of the working set (working.go).

// TestRedTeamWSExpectRefIgnoresPendingWrites
//
// Promise: every root covers every acknowledged write, and a batch that
// expects the working ref (Batch.ExpectRef, as Update, Import, a sync's
// commit and a server's push use it) commits only on the state it read.
// Attack: read the ref, Write k=old through the working set (acknowledged),
// then commit a batch built on the root read first, k=new, with
// ExpectRef(head, root). Effect: the commit succeeds (Commit compares the
// raw ref only, blind to the pending edit), and the later catch-up applies
// the older Write on top: the batch's acknowledged k=new is silently lost,
// although the batch committed after the Write was acknowledged. Without
// the working set the Write would have moved head and the commit would fail
// with ErrRefMoved.
func TestRedTeamWSExpectRefIgnoresPendingWrites(t *testing.T) {
	ctx := context.Background()
	s := openWorking(t, t.TempDir(), Options{NoSync: true, WorkingDelay: time.Hour, WorkingBytes: 1 << 30})
	if err := s.Write(ctx, []Edit{{Key: []byte("a"), Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	root, ok, err := s.Ref("head")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := s.Write(ctx, []Edit{{Key: []byte("k"), Value: []byte("old")}}); err != nil {
		t.Fatal(err)
	}
	b, err := s.NewBatch()
	if err != nil {
		t.Fatal(err)
	}
	nr, err := b.Apply(ctx, root, []Edit{{Key: []byte("k"), Value: []byte("new")}})
	if err != nil {
		t.Fatal(err)
	}
	b.ExpectRef("head", root, true)
	b.SetRef("head", nr)
	err = b.Commit(ctx)
	if errors.Is(err, ErrRefMoved) {
		return // defended
	}
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Lookup(ctx, "head", []byte("k"))
	if err != nil || string(v) != "new" {
		t.Fatalf("batch committed k=new after Write(k=old) was acknowledged (ExpectRef passed), yet Lookup k = %q, %v", v, err)
	}
}

// TestRedTeamWSReopenWithOtherRefMisroutesLeftWrites
//
// Promise: after kill -9 the store reopens with every acknowledged write;
// edits a crash left are applied "to the ref recorded in metadata
// working-ref" (DESIGN), i.e. the ref they were written for.
// Attack: write through the working set of "head", stop as a crash would
// (no catch-up), reopen with Options.WorkingRef "other". Effect: initWorking
// rewrites the working-ref metadata to "other" before applyLeftWork, so the
// acknowledged edits of head are applied to "other" and head never gets
// them.
func TestRedTeamWSReopenWithOtherRefMisroutesLeftWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "head", WorkingDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []Edit{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	// What a kill between the write and its catch-up leaves (as
	// TestWorkingSetSurvivesReopen does).
	s.work.ref = ""
	close(s.work.stop)
	<-s.work.done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	root, err := s2.Root("head")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(ctx, root, []byte("k")); err != nil {
		o, _ := s2.Root("other")
		_, oerr := s2.Get(ctx, o, []byte("k"))
		t.Fatalf("acknowledged write to head lost after reopen with another working ref: head Get k: %v; ref \"other\" has it: %v", err, oerr == nil)
	}
}

// TestRedTeamWSAddressConflictWedgesStore
//
// Promise: an acknowledged write is never lost and never fails later
// (DESIGN: "an acknowledged write must never fail later"); every root
// covers it; the store reopens after a crash.
// Attack: a store with Options.CheckAddresses and a working set; Write a
// value, then (acknowledged at once, unchecked) a value of <= 64 KiB whose
// chunk is an xxh3 collision of the first. Effect: Write returns nil, but
// every catch-up fails with ErrAddressConflict: Root fails forever, Close
// fails, and Open fails (it must apply the left generation first), so the
// store cannot be opened at all. Update would have refused the write up
// front.
func TestRedTeamWSAddressConflictWedgesStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := xxh3collide.Pair(2048, bytes.Repeat([]byte("rest of the value "), 200))
	o := Options{NoSync: true, CheckAddresses: true, WorkingRef: "head", WorkingDelay: time.Hour}
	s, err := Open(dir, &o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []Edit{{Key: []byte("k1"), Value: a}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Root("head"); err != nil {
		t.Fatal(err)
	}
	werr := s.Write(ctx, []Edit{{Key: []byte("k2"), Value: b}})
	if werr != nil {
		s.Close()
		if errors.Is(werr, ErrAddressConflict) {
			return // defended: refused, not acknowledged
		}
		t.Fatal(werr)
	}
	_, rerr := s.Root("head")
	cerr := s.Close()
	s2, oerr := Open(dir, &o)
	if oerr == nil {
		s2.Close()
	}
	if rerr != nil || oerr != nil {
		t.Fatalf("Write of a colliding value acknowledged, then: Root: %v; Close: %v; reopen: %v", rerr, cerr, oerr)
	}
}

// TestRedTeamWSConcurrentClosePanics
//
// Promise: concurrent operations, Close included, never deadlock or race;
// "Further calls to Close fail with ErrClosed."
// Attack: two goroutines call Close at once on a store with a working set.
// Effect: both pass the closing check (closing is set only after
// closeWorking), both run closeWorking, and the second close(w.stop) panics
// with "close of closed channel", taking the process down.
func TestRedTeamWSConcurrentClosePanics(t *testing.T) {
	ctx := context.Background()
	for i := range 20 {
		s, err := Open(t.TempDir(), &Options{Chunker: smallConfig, NoSync: true, WorkingRef: "head", WorkingDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		// Something to apply makes closeWorking's window wider.
		var es []Edit
		for j := range 500 {
			es = append(es, Edit{Key: []byte(fmt.Sprintf("k%04d", j)), Value: []byte("v")})
		}
		if err := s.Write(ctx, es); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var panics []any
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if p := recover(); p != nil {
						mu.Lock()
						panics = append(panics, p)
						mu.Unlock()
					}
				}()
				<-start
				s.Close()
			}()
		}
		close(start)
		wg.Wait()
		if len(panics) > 0 {
			t.Fatalf("round %d: concurrent Close panicked: %v", i, panics[0])
		}
	}
}

// TestRedTeamWSEmptyWriteDisarmsBackgroundCatchUp
//
// Promise: "WorkingDelay is the longest a write waits in the working set
// before a background catch-up applies it"; followers (net Follow, a
// server's watch) learn of local writes from RefsChanged, which only a
// catch-up's commit fires.
// Attack: Store.Write with no edits (allowed), then ordinary writes.
// Effect: the empty Write arms the delay timer with nothing in the set;
// when it fires, CatchUp finds nothing and returns without clearing
// w.timer, so every later Write sees a timer "already set" and none is
// armed again: the ref never moves and RefsChanged never fires until
// WorkingBytes accumulate or someone reads the ref.
func TestRedTeamWSEmptyWriteDisarmsBackgroundCatchUp(t *testing.T) {
	ctx := context.Background()
	s := openWorking(t, t.TempDir(), Options{NoSync: true, WorkingDelay: 5 * time.Millisecond})
	if err := s.Write(ctx, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the timer fires on an empty set
	changed := s.RefsChanged()
	if err := s.Write(ctx, []Edit{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(time.Second):
		_, ok, _ := s.rawRef("head")
		t.Fatalf("a write waited 1 s (200 x WorkingDelay) without a background catch-up after an empty Write: head set %v, RefsChanged silent", ok)
	}
}

// TestRedTeamWSDefendedWritesRacingClose
//
// Attack (held): writers keep calling Write while Close runs (its
// closeWorking catch-up, then the drain); a Write acknowledged after the
// final catch-up is left in the working set. After a reopen every
// acknowledged write is in head.
func TestRedTeamWSDefendedWritesRacingClose(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		dir := t.TempDir()
		s, err := Open(dir, &Options{Chunker: smallConfig, NoSync: true, WorkingRef: "head", WorkingDelay: time.Millisecond, WorkingBytes: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		acked := map[string]bool{}
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					k := fmt.Sprintf("w%d-%05d", w, i)
					if err := s.Write(ctx, []Edit{{Key: []byte(k), Value: []byte(k)}}); err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						return
					}
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		s2, err := Open(dir, &Options{Chunker: smallConfig, WorkingRef: "head"})
		if err != nil {
			t.Fatal(err)
		}
		root, err := s2.Root("head")
		if err != nil {
			t.Fatal(err)
		}
		for k := range acked {
			if _, err := s2.Get(ctx, root, []byte(k)); err != nil {
				t.Fatalf("round %d: acknowledged %s missing after Close and reopen: %v", round, k, err)
			}
		}
		s2.Close()
	}
}
