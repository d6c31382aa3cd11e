package arbor_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/arbor-sync/arbor"
	"github.com/arbor-sync/arbor/scope"
)

// Red-team tests of the working set (tree/working.go) through the DB API.

// hookCtx is a context whose first Err call (past the point where a write
// has read head) runs hook once: it lands another goroutine's write at a
// precise point of an operation, deterministically.
type hookCtx struct {
	context.Context
	once sync.Once
	hook func()
}

func (c *hookCtx) Err() error {
	c.once.Do(c.hook)
	return c.Context.Err()
}

// TestRedTeamWSBigValueReorderedBehindSmallWrite
//
// Promise: values over 64 KiB (applied directly) keep their order relative
// to working-set writes; every acknowledged write is visible to Get.
// Attack: Apply a batch {k: 70 KiB, j: "A"} (the big value sends it to
// Update, which reads head, catching up, then applies). While it applies,
// another writer Puts k="small" (acknowledged) and then sees j unchanged:
// the batch has not happened yet, so it is ordered after the Put. Effect:
// the batch commits (its ExpectRef compares the raw ref, blind to the
// pending Put), then the catch-up applies the older Put on top: j comes
// from the batch but k from the Put, an order no serial history gives; the
// batch's acknowledged k is lost.
func TestRedTeamWSBigValueReorderedBehindSmallWrite(t *testing.T) {
	bg := context.Background()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Put(bg, []byte("j"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("B"), 70<<10)
	var jDuring []byte
	ctx := &hookCtx{Context: bg, hook: func() {
		if err := db.Put(bg, []byte("k"), []byte("small")); err != nil {
			t.Error(err)
		}
		jDuring, _ = db.Get(bg, []byte("j"))
	}}
	if err := db.Apply(ctx, new(arbor.Batch).Put([]byte("k"), big).Put([]byte("j"), []byte("A"))); err != nil {
		t.Fatal(err)
	}
	if string(jDuring) != "before" {
		t.Skipf("the hook ran after the batch took effect (j = %q): no interleaving", jDuring)
	}
	k, _ := db.Get(bg, []byte("k"))
	j, _ := db.Get(bg, []byte("j"))
	if string(j) == "A" && !bytes.Equal(k, big) {
		t.Fatalf("Put(k=small) was acknowledged while the big batch had not taken effect (j still %q), so the batch is later; yet after it k = %q (%d bytes), j = %q", jDuring, k[:min(len(k), 8)], len(k), j)
	}
}

// putReader is an import source that Puts through the DB on its first Read
// (another writer acting while Import runs), then yields lines.
type putReader struct {
	once  sync.Once
	put   func()
	lines io.Reader
}

func (r *putReader) Read(p []byte) (int, error) {
	r.once.Do(r.put)
	return r.lines.Read(p)
}

// TestRedTeamWSImportOverwrittenByOlderPut
//
// Promise: every acknowledged write is visible to Get; Import is one
// atomic commit against the head it read (before the working set a
// concurrent write moved head and Import failed with ErrRefMoved).
// Attack: while Import reads its input, another writer Puts k="put"
// (acknowledged) and sees j unchanged (Import not yet applied). Import then
// commits k="import", j="import" and succeeds. Effect: Get(j) = "import"
// but Get(k) = "put": the catch-up replayed the older Put on top of the
// later Import, whose acknowledged k is lost.
func TestRedTeamWSImportOverwrittenByOlderPut(t *testing.T) {
	ctx := context.Background()
	db, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Put(ctx, []byte("j"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	var jDuring []byte
	r := &putReader{lines: strings.NewReader("k\timport\nj\timport\n"), put: func() {
		if err := db.Put(ctx, []byte("k"), []byte("put")); err != nil {
			t.Error(err)
		}
		jDuring, _ = db.Get(ctx, []byte("j"))
	}}
	_, err = db.Import(ctx, r, arbor.ImportOptions{})
	if err != nil {
		return // refused (e.g. ErrRefMoved): defended
	}
	k, _ := db.Get(ctx, []byte("k"))
	j, _ := db.Get(ctx, []byte("j"))
	if string(jDuring) == "before" && string(j) == "import" && string(k) != "import" {
		t.Fatalf("Import committed after Put(k=put) was acknowledged (j was still %q then), yet k = %q, j = %q", jDuring, k, j)
	}
}

// TestRedTeamWSStaleScopeWriteWedgesReplica
//
// Promise: an acknowledged write is never lost and never fails later
// (DESIGN: a partial replica applies every write at once, since "an
// acknowledged write must never fail later"); the store reopens with it.
// Attack: a full replica narrows to scope b/ by Sync; a Put of a/0003
// arrives before Sync returns (here from the Progress "done" callback, i.e.
// after the commit and the pruning GC, before DB.Sync drops its cached
// scope). Effect: DB.Apply's stale scope says "all", so the write goes into
// the working set and is acknowledged; the catch-up onto the pruned tree
// then needs nodes outside the scope and fails for good: Root, Count,
// Sync, Close fail, and the store can no longer be opened.
func TestRedTeamWSStaleScopeWriteWedgesReplica(t *testing.T) {
	ctx := context.Background()
	_, db, opts := syncPair(t, func(b *arbor.Batch) {
		for i := range 2000 {
			b.Put([]byte(fmt.Sprintf("%c/%04d", 'a'+i%5, i)), bytes.Repeat([]byte("v"), 40))
		}
	})
	if _, err := db.Sync(ctx, opts); err != nil { // full clone
		t.Fatal(err)
	}
	if sc, err := db.Scope(); err != nil || !sc.IsAll() { // cached: all
		t.Fatal(sc, err)
	}
	var putErr error
	put := false
	opts.Scope = scope.Prefixes([]byte("b/"))
	opts.Progress = func(p arbor.SyncProgress) {
		if p.Phase == "done" && !put {
			put = true
			putErr = db.Put(ctx, []byte("a/0003"), []byte("late"))
		}
	}
	if _, err := db.Sync(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if !put {
		t.Skip("no done phase")
	}
	if putErr != nil {
		return // refused: defended
	}
	_, rootErr := db.Root(ctx)
	dir := db.Dir()
	closeErr := db.Close()
	db2, openErr := arbor.Open(dir, nil)
	if openErr == nil {
		db2.Close()
	}
	if rootErr != nil || openErr != nil {
		t.Fatalf("Put(a/0003) acknowledged during a narrowing sync, then: Root: %v; Close: %v; reopen: %v", rootErr, closeErr, openErr)
	}
}

// TestRedTeamWSDefendedConcurrentMixedWrites
//
// Attack (held): writers Put, Delete and Apply small and over-64-KiB values
// to the same keys (each writer its own keys, so each key's order is
// defined), checking Get after every write, while others read Root, Count,
// iterate, Verify and GC, and then Close and reopen. Run with -race. Every
// Get saw the last acknowledged write, and the reopened root is the bulk
// build of the model.
func TestRedTeamWSDefendedConcurrentMixedWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	big := func(i int) []byte { return bytes.Repeat([]byte{byte('A' + i%26)}, 70<<10) }
	const writers, steps, keys = 3, 120, 20
	models := make([]map[string][]byte, writers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { // roots, counts, iterators, verify
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Count(ctx); err != nil {
				t.Error(err)
				return
			}
			it := db.NewIterator(ctx, arbor.Range{})
			for it.Next() {
			}
			if err := it.Close(); err != nil {
				t.Error(err)
				return
			}
			if _, err := db.Verify(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.GC(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for w := range writers {
		models[w] = map[string][]byte{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := models[w]
			for i := range steps {
				k := fmt.Sprintf("w%d-%02d", w, (i*7+w)%keys)
				b := new(arbor.Batch)
				switch i % 10 {
				case 0:
					b.Put([]byte(k), big(i))
				case 1, 2:
					b.Delete([]byte(k))
				case 3:
					k2 := fmt.Sprintf("w%d-%02d", w, (i*3)%keys)
					b.Put([]byte(k), []byte("x")).Put([]byte(k2), big(i+1)).Delete([]byte(k))
				default:
					b.Put([]byte(k), []byte(fmt.Sprintf("v%d", i)))
				}
				if err := db.Apply(ctx, b); err != nil {
					t.Error(err)
					return
				}
				// the model: later edits of a key win
				switch i % 10 {
				case 0:
					m[k] = big(i)
				case 1, 2:
					delete(m, k)
				case 3:
					m[fmt.Sprintf("w%d-%02d", w, (i*3)%keys)] = big(i + 1)
					delete(m, k)
				default:
					m[k] = []byte(fmt.Sprintf("v%d", i))
				}
				for kk := range keys {
					key := fmt.Sprintf("w%d-%02d", w, kk)
					v, err := db.Get(ctx, []byte(key))
					want, ok := m[key]
					if ok != (err == nil) || !bytes.Equal(v, want) {
						t.Errorf("writer %d step %d: Get %s = %d bytes, %v; want %d bytes (present %v)", w, i, key, len(v), err, len(want), ok)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = arbor.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ref, err := arbor.Open(t.TempDir(), &arbor.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	all := new(arbor.Batch)
	for _, m := range models {
		for k, v := range m {
			all.Put([]byte(k), v)
		}
	}
	if err := ref.Apply(ctx, all); err != nil {
		t.Fatal(err)
	}
	got, err := db.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := ref.Root(ctx); got != want {
		t.Fatalf("reopened root %s, bulk build of the model %s", got, want)
	}
}
