package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// TestGetThroughRows reads every key (and keys that are absent) of two
// versions of a tree three times each, with a node cache far smaller than
// the tree, so that Gets are answered from rows, from cached leaves and
// from the store. Every answer must be the version's own.
func TestGetThroughRows(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []chunker.Config{smallConfig, {}} {
		s, err := Open(t.TempDir(), &Options{Chunker: cfg, NoSync: true, CacheSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		model := map[string]string{}
		for i := range 3000 {
			model[fmt.Sprintf("k%05d", 2*i)] = fmt.Sprintf("v%d", i)
		}
		r1 := build(t, s, model)
		var edits []Edit
		for i := 0; i < 3000; i += 7 {
			edits = append(edits, Edit{Key: []byte(fmt.Sprintf("k%05d", 2*i)), Value: []byte(fmt.Sprintf("w%d", i))})
		}
		r2 := apply(t, s, r1, edits)
		for round := range 3 {
			for i := range 6000 {
				k := fmt.Sprintf("k%05d", i)
				for v, h := range [2]node.Hash{r1, r2} {
					got, err := s.Get(ctx, h, []byte(k))
					want, ok := "", i%2 == 0
					if ok {
						want = fmt.Sprintf("v%d", i/2)
						if v == 1 && (i/2)%7 == 0 {
							want = fmt.Sprintf("w%d", i/2)
						}
					}
					switch {
					case !ok && !errors.Is(err, ErrNotFound):
						t.Fatalf("round %d: version %d: get %s: %q, %v; want not found", round, v, k, got, err)
					case ok && (err != nil || string(got) != want):
						t.Fatalf("round %d: version %d: get %s: %q, %v; want %q", round, v, k, got, err, want)
					}
				}
			}
		}
		if s.cache.bytes[classRow] == 0 {
			t.Fatal("no rows cached")
		}
		if got := s.cache.held(); got > s.cache.budget+8<<10 {
			t.Fatalf("cache holds %d bytes, budget %d", got, s.cache.budget)
		}
		s.Close()
	}
}

// TestGetDamagedLeaf: a point read of a leaf whose stored bytes do not hash
// to its address reports ErrCorrupt on its first read (searched in place)
// and on its second (decoded), and caches no answer.
func TestGetDamagedLeaf(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, chunker.Config{})
	model := map[string]string{}
	for i := range 2000 {
		model[fmt.Sprintf("k%05d", i)] = fmt.Sprintf("v%d", i)
	}
	root := build(t, s, model)
	rn, err := s.Node(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	for rn.Level() > 1 {
		h, _ := rn.Child(0)
		if rn, err = s.Node(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	leaf, _ := rn.Child(0)
	key := bytes.Clone(rn.Key(0)) // the leaf's last key
	forged := node.Build(node.XXH3, 0, []node.Entry{{Key: key, Payload: node.InlineValue([]byte("forged")).AppendPayload(nil)}})
	if err := s.db.Set(nodeKey(leaf), forged.Raw(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.cache.invalidate()
	for range 2 {
		if v, err := s.Get(ctx, root, key); !errors.Is(err, node.ErrCorrupt) {
			t.Fatalf("Get = %q, %v; want ErrCorrupt", v, err)
		}
	}
	if _, _, ok := s.cache.row(leaf, key); ok {
		t.Fatal("a row of the damaged leaf was cached")
	}
}
