package tree

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// TestAttributeRankMatchesValue: for every node, delta and blob value that
// Pebble moved to a blob file, the rank GC derives from the short attribute
// kept beside the reference equals the rank the value itself gives, so the
// sweep can order deletions without reading values back.
func TestAttributeRankMatchesValue(t *testing.T) {
	s := openTest(t, smallConfig)
	ctx := context.Background()
	var edits []Edit
	for i := range 400 {
		v := bytes.Repeat([]byte{byte(i)}, 300)
		if i%50 == 0 {
			v = bytes.Repeat([]byte(fmt.Sprintf("large value %d ", i)), 400) // out of line: chunks and an index
		}
		edits = append(edits, Edit{Key: []byte(fmt.Sprintf("key-%04d", i)), Value: v})
	}
	root := apply(t, s, node.EmptyRoot(node.XXH3), edits)
	// Scattered small updates, so that some rewritten nodes are deltas.
	for i := 0; i < 400; i += 37 {
		root = apply(t, s, root, []Edit{{Key: []byte(fmt.Sprintf("key-%04d", i)), Value: bytes.Repeat([]byte{'u'}, 300)}})
	}
	if err := s.db.Flush(); err != nil { // separates the values
		t.Fatal(err)
	}
	seen := map[byte]int{}
	for _, p := range []byte{prefixNode, prefixDelta, prefixBlob} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			lv := it.LazyValue()
			if lv.Fetcher == nil {
				continue // inline: the sweep reads it anyway
			}
			want := deleteRank(p, it.Value())
			got, ok := attributeRank(p, lv.Fetcher.Attribute.ShortAttribute)
			if !ok || got != want {
				t.Errorf("%c%x: attribute %d gives rank %d (ok %v), value gives %d", p, it.Key()[1:], lv.Fetcher.Attribute.ShortAttribute, got, ok, want)
			}
			seen[p]++
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if seen[prefixNode] == 0 || seen[prefixBlob] == 0 {
		t.Fatalf("separated values seen: %v; want nodes and blobs", seen)
	}
	if _, err := s.GC(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, root); err != nil {
		t.Fatal(err)
	}
}

// TestAttributeRankUnknown: attributes that do not tell (none, or a level
// of 6 and above) send the sweep to the value.
func TestAttributeRankUnknown(t *testing.T) {
	for _, c := range []struct {
		p byte
		a pebble.ShortAttribute
	}{{prefixNode, 0}, {prefixNode, 7}, {prefixDelta, 7}, {prefixBlob, 0}, {prefixBlob, 3}} {
		if _, ok := attributeRank(c.p, c.a); ok {
			t.Errorf("prefix %c attribute %d: ok, want unknown", c.p, c.a)
		}
	}
}
