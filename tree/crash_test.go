package tree

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs a writer in a child process (this test binary,
// re-executed with TestCrashChild selected) and kills it with SIGKILL at
// random points, then checks the store the way a restarted server would.
//
// State is checkable because generation g of the store is a pure function
// of (run seed, g): genEdits(seed, g) turns generation g-1 into g, and the
// record "gen" holds g. The parent replays the same edits to know exactly
// what generation g must hold.

var crashIterations = flag.Int("crash.iterations", 0, "kills per durability mode in TestCrashRecovery (0: 24, or $ARBOR_CRASH_ITERATIONS)")

const (
	envCrashDir  = "ARBOR_CRASH_DIR"
	envCrashSeed = "ARBOR_CRASH_SEED"
	envCrashSync = "ARBOR_CRASH_SYNC"
	crashRef     = "head"
	crashGenKey  = "gen"
	crashKeys    = 3000
	crashGCEvery = 15 // the child collects garbage every this many generations
	// Every crashBulkEvery-th generation is written as a bulk load: the
	// whole generation rebuilt by a Builder whose batch ingests sstables
	// (spills, then a tail in parallel parts), so kills also land between
	// and during ingestions. History independence makes its root the one
	// Update would give.
	crashBulkEvery = 5
	commitLog      = "committed.log"
)

// genEdits returns the edits that turn generation g-1 into g: puts and
// deletes over a fixed key space, some values large enough to be stored
// out of line, and the generation record.
func genEdits(seed uint64, g int) []Edit {
	r := rand.New(rand.NewPCG(seed, uint64(g)))
	n := 20 + r.IntN(300)
	edits := make([]Edit, 0, n+1)
	for i := 0; i < n; i++ {
		k := []byte(fmt.Sprintf("r%05d", r.IntN(crashKeys)))
		switch x := r.IntN(100); {
		case x < 25:
			edits = append(edits, Edit{Key: k, Delete: true})
		case x < 27:
			// 1.5–40 KiB: out of line, one to a few content-defined chunks.
			v := make([]byte, 1500+r.IntN(40<<10))
			for j := range v {
				v[j] = byte(r.Uint32())
			}
			edits = append(edits, Edit{Key: k, Value: v})
		default:
			edits = append(edits, Edit{Key: k, Value: fmt.Appendf(nil, "g%d/%s/%x", g, k, r.Uint64())})
		}
	}
	return append(edits, Edit{Key: []byte(crashGenKey), Value: []byte(strconv.Itoa(g))})
}

// singlePuts reports whether generation g is written as single-edit
// working-set writes: a kill may then leave a prefix of its edits.
func singlePuts(g int) bool { return g%crashBulkEvery != 0 && g%3 == 2 }

// crashModel is the parent's replica of the child's state.
type crashModel struct {
	seed uint64
	gen  int
	recs map[string]string
}

// advance replays generations until m is at gen.
func (m *crashModel) advance(gen int) {
	for m.gen < gen {
		m.gen++
		for _, e := range genEdits(m.seed, m.gen) {
			if e.Delete {
				delete(m.recs, string(e.Key))
			} else {
				m.recs[string(e.Key)] = string(e.Value)
			}
		}
	}
}

// TestCrashChild is the writer process of TestCrashRecovery. It does
// nothing unless started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashRecovery")
	}
	seed, _ := strconv.ParseUint(os.Getenv(envCrashSeed), 10, 64)
	sync := os.Getenv(envCrashSync) == "1"
	// Small spills: nodes and blobs of most batches reach Pebble in several
	// writes ahead of the commit, so kills also land between them.
	spillBytes = 64 << 10
	// Rewrite leaf levels with two goroutines, each writing its nodes
	// ahead of the commit, so kills also land between those writes.
	parallelMinEdits = 16
	// Small bulk-load spills and tails, so a bulk generation ingests
	// several sstables before its commit and its tail in parts.
	ingestSpillBytes, ingestTailMin, tailParts = 96<<10, 16<<10, 2
	ctx := context.Background()
	// A working set that catches up often, in the background, so kills
	// land between working-set writes, during catch-ups and between them.
	s, err := Open(filepath.Join(dir, "store"), &Options{NoSync: !sync, CacheSize: 1 << 20,
		WorkingRef: crashRef, WorkingBytes: 8 << 10, WorkingDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.OpenFile(filepath.Join(dir, commitLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.Root(crashRef)
	if err != nil {
		t.Fatal(err)
	}
	g := 0
	if v, err := s.Get(ctx, root, []byte(crashGenKey)); err == nil {
		g, _ = strconv.Atoi(string(v))
	} else if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	for {
		g++
		switch {
		case g%crashBulkEvery == 0:
			if err := bulkGeneration(ctx, s, genEdits(seed, g)); err != nil {
				t.Fatalf("bulk generation %d: %v", g, err)
			}
		case singlePuts(g):
			// One working-set write per edit, racing the background
			// catch-up; the generation record comes last.
			for _, e := range genEdits(seed, g) {
				if err := s.Write(ctx, []Edit{e}); err != nil {
					t.Fatalf("generation %d: single write: %v", g, err)
				}
			}
		case g%3 == 1:
			if err := s.Write(ctx, genEdits(seed, g)); err != nil { // one atomic working-set write
				t.Fatalf("generation %d: %v", g, err)
			}
		default:
			if _, err := s.Update(ctx, crashRef, genEdits(seed, g)); err != nil {
				t.Fatalf("generation %d: %v", g, err)
			}
		}
		// A write to the page cache survives SIGKILL: once this line is in
		// the log, generation g was committed.
		if _, err := fmt.Fprintf(log, "%d\n", g); err != nil {
			t.Fatal(err)
		}
		if g%crashGCEvery == 0 {
			if _, err := s.GC(ctx); err != nil {
				t.Fatalf("gc at generation %d: %v", g, err)
			}
		}
	}
}

// bulkGeneration applies edits to the crash ref's records by rebuilding the
// whole tree with a Builder (an ingesting bulk load) and moving the ref to
// it in the same commit.
func bulkGeneration(ctx context.Context, s *Store, edits []Edit) error {
	root, err := s.Root(crashRef)
	if err != nil {
		return err
	}
	recs := map[string]string{}
	it := s.NewIterator(ctx, root, Range{})
	for it.Next() {
		v, err := s.ReadValue(ctx, it.Value())
		if err != nil {
			it.Close()
			return err
		}
		recs[string(it.Key())] = string(v)
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, e := range edits {
		if e.Delete {
			delete(recs, string(e.Key))
		} else {
			recs[string(e.Key)] = string(e.Value)
		}
	}
	_, err = buildModel(ctx, s, recs, crashRef)
	return err
}

// readCommitLog returns the last generation the child reported committed
// and how many lines it holds. A torn last line is ignored.
func readCommitLog(path string) (last, lines int, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if g, err := strconv.Atoi(sc.Text()); err == nil {
			last = g
			lines++
		}
	}
	return last, lines, nil
}

// TestCrashRecovery kills a writing process with SIGKILL many times, in
// both durability modes, and after each kill checks that the store opens,
// that its head verifies, and that the head holds exactly one generation the
// child produced: with Sync, at least the last one the child saw committed;
// with NoSync, at least the one the previous check found (closed cleanly)
// and at most one past the last reported.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv(envCrashDir) != "" {
		t.Skip("already in the child")
	}
	iters := 24
	if v, err := strconv.Atoi(os.Getenv("ARBOR_CRASH_ITERATIONS")); err == nil && v > 0 {
		iters = v
	}
	if *crashIterations > 0 {
		iters = *crashIterations
	}
	if testing.Short() {
		iters = 3
	}
	for _, sync := range []bool{true, false} {
		name := "NoSync"
		if sync {
			name = "Sync"
		}
		t.Run(name, func(t *testing.T) { crashLoop(t, sync, iters) })
	}
}

func crashLoop(t *testing.T, sync bool, iters int) {
	ctx := context.Background()
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	model := &crashModel{seed: seed, recs: map[string]string{}}
	verified := 0 // the generation the last check found
	var lost, lastLines, deltas, bulk, midIngest, leftWork, cutShort int
	for it := 0; it < iters; it++ {
		var out bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			envCrashDir+"="+dir,
			envCrashSeed+"="+strconv.FormatUint(seed, 10),
			envCrashSync+"="+map[bool]string{true: "1", false: "0"}[sync])
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		// Kill after a random number of further commits (0–9) plus a random
		// delay, so kills land before the first commit (even during Open),
		// mid-batch, mid-spill and mid-GC.
		wantLines := lastLines + r.IntN(10)
		delay := time.Duration(r.IntN(40)) * time.Millisecond
		deadline := time.Now().Add(time.Minute)
		for {
			_, lines, err := readCommitLog(filepath.Join(dir, commitLog))
			if err != nil {
				t.Fatal(err)
			}
			if lines >= wantLines || time.Now().After(deadline) {
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("iteration %d: child exited before the kill: %v\n%s", it, err, out.String())
			case <-time.After(2 * time.Millisecond):
			}
		}
		time.Sleep(delay)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("iteration %d: child ended with %v, not by SIGKILL\n%s", it, err, out.String())
		}

		reported, lines, err := readCommitLog(filepath.Join(dir, commitLog))
		if err != nil {
			t.Fatal(err)
		}
		lastLines = lines
		// Sstables a bulk generation was writing when the kill came: Open
		// removes them.
		if ents, err := os.ReadDir(filepath.Join(dir, "store")); err == nil {
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ingestPrefix) {
					midIngest++
					break
				}
			}
		}
		found, nd, unsettled, work := checkCrashedStore(t, ctx, filepath.Join(dir, "store"), model, sync)
		deltas += nd
		if work.left {
			leftWork++
		}
		if work.prefix {
			cutShort++
		}
		if unsettled {
			bulk++
		}
		switch {
		case found > reported+1:
			t.Fatalf("iteration %d: store holds generation %d, but the child had committed only up to %d", it, found, reported)
		case sync && found < reported:
			t.Fatalf("iteration %d: Sync store holds generation %d, but the child saw %d committed", it, found, reported)
		case found < verified:
			t.Fatalf("iteration %d: store went back from generation %d to %d", it, verified, found)
		}
		if found < reported {
			lost += reported - found
		}
		// The next child continues from found: restart the log there, so
		// that it forgets lost generations and records one committed but
		// not yet logged when the kill came.
		if err := os.WriteFile(filepath.Join(dir, commitLog), fmt.Appendf(nil, "%d\n", found), 0o644); err != nil {
			t.Fatal(err)
		}
		lastLines = 1
		verified = found
	}
	t.Logf("%d kills, reached generation %d, %d unsynced generations lost, %d delta-stored nodes seen, %d stores reopened after a bulk generation (%d killed while writing an sstable to ingest), %d with working-set edits to apply (%d in a generation of single writes cut short)",
		iters, verified, lost, deltas, bulk, midIngest, leftWork, cutShort)
	if verified == 0 {
		t.Fatalf("the child never committed a generation")
	}
	if iters >= 10 && deltas == 0 {
		t.Fatalf("no reopened store held a delta-stored node: the kills did not exercise deltas")
	}
	if iters >= 20 && leftWork == 0 {
		t.Fatalf("no reopened store had working-set edits to apply: the kills did not exercise the working set")
	}
	if iters >= 10 && bulk == 0 {
		t.Fatalf("no reopened store followed a bulk generation: the kills did not exercise ingestion")
	}
}

// checkCrashedStore opens the store after a kill, verifies its head and
// compares its records with the generation the head names. It returns
// that generation and how many nodes the store holds as deltas (each with
// its base stored whole, which storedForms checks).
func checkCrashedStore(t *testing.T, ctx context.Context, dir string, m *crashModel, sync bool) (gen, deltas int, unsettled bool, work crashWork) {
	t.Helper()
	// Before the first commit the kill may come while the child creates
	// the store: then it need not exist yet.
	s, err := Open(dir, &Options{NoSync: !sync, MustExist: m.gen > 0})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}()
	work.left = s.work.leftApplied > 0
	// A bulk generation's commit marks the store unsettled until its
	// background settle, which the child seldom lives to finish.
	if unsettled, err = s.Unsettled(); err != nil {
		t.Fatal(err)
	}
	root, err := s.Root(crashRef)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Verify(ctx, root); err != nil {
		t.Fatalf("verify head %s after kill: %v (%d nodes, %d blobs)", root, err, rep.Nodes, rep.Blobs)
	}
	g := 0
	if v, err := s.Get(ctx, root, []byte(crashGenKey)); err == nil {
		if g, err = strconv.Atoi(string(v)); err != nil || g <= 0 {
			t.Fatalf("gen record %q", v)
		}
	} else if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if g < m.gen {
		t.Fatalf("store holds generation %d, earlier than the %d already checked", g, m.gen)
	}
	m.advance(g)
	want := m.recs
	if singlePuts(g + 1) {
		// A kill during single writes leaves a prefix of generation g+1's
		// edits (its generation record comes last): find the one the
		// store holds, if any. Each write is atomic, so a prefix it is.
		have := map[string]string{}
		it := s.NewIterator(ctx, root, Range{})
		for it.Next() {
			v, err := s.ReadValue(ctx, it.Value())
			if err != nil {
				t.Fatal(err)
			}
			have[string(it.Key())] = string(v)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		next := genEdits(m.seed, g+1)
		prefix := maps(m.recs)
		applied := 0
		for ; !sameRecords(prefix, have) && applied < len(next)-1; applied++ {
			if e := next[applied]; e.Delete {
				delete(prefix, string(e.Key))
			} else {
				prefix[string(e.Key)] = string(e.Value)
			}
		}
		if applied > 0 && sameRecords(prefix, have) {
			// Finish the generation here: a child would start it again from
			// its first edit over this prefix, a state no generation or
			// prefix of the model describes.
			work.prefix = true
			if root, err = s.Update(ctx, crashRef, next[applied:]); err != nil {
				t.Fatal(err)
			}
			g++
			m.advance(g)
			want = m.recs
		}
	}
	// Compare every record, in order, values included.
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	it := s.NewIterator(ctx, root, Range{})
	defer it.Close()
	i := 0
	for it.Next() {
		if i >= len(keys) || string(it.Key()) != keys[i] {
			want := "<end>"
			if i < len(keys) {
				want = keys[i]
			}
			t.Fatalf("generation %d: record %d is %q, want %q", g, i, it.Key(), want)
		}
		v, err := s.ReadValue(ctx, it.Value())
		if err != nil {
			t.Fatalf("generation %d: read %q: %v", g, it.Key(), err)
		}
		if string(v) != want[keys[i]] {
			t.Fatalf("generation %d: value of %q differs from the model", g, it.Key())
		}
		i++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(keys) {
		t.Fatalf("generation %d: store holds %d records, model %d", g, i, len(keys))
	}
	if n, err := s.Count(ctx, root); err != nil || n != uint64(len(keys)) {
		t.Fatalf("generation %d: Count = %d, %v; want %d", g, n, err, len(keys))
	}
	// The head must also be the canonical tree of its records.
	if g > 0 {
		b, err := s.NewBatch()
		if err != nil {
			t.Fatal(err)
		}
		bl := b.NewBuilder(ctx)
		for _, k := range keys {
			if err := bl.Add([]byte(k), []byte(want[k])); err != nil {
				t.Fatal(err)
			}
		}
		want, err := bl.Finish()
		b.Discard()
		if err != nil || want != root {
			t.Fatalf("generation %d: head %s, bulk build of its records %s (%v)", g, root, want, err)
		}
	}
	_, deltas = storedForms(t, s)
	return g, deltas, unsettled, work
}

// crashWork says what a kill left of the working set: edits Open applied,
// and a generation of single writes cut short.
type crashWork struct{ left, prefix bool }

func sameRecords(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
