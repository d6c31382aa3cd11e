package tree

import (
	"context"
	"errors"
	"testing"

	"github.com/arbor-sync/arbor/node"
	"github.com/cockroachdb/pebble/v2"
)

// TestNodeUnderWrongKey: a stored node whose bytes hash to another address
// (written under the wrong key) reads as ErrCorrupt, never as that node.
func TestNodeUnderWrongKey(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r1 := apply(t, s, node.EmptyRoot, []Edit{{Key: []byte("a"), Value: []byte("1")}})
	r2 := apply(t, s, node.EmptyRoot, []Edit{{Key: []byte("b"), Value: []byte("2")}})
	n1, err := s.Node(context.Background(), r1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(nodeKey(r2), n1.Raw(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir, &Options{NoSync: true}); err != nil { // a cold node cache
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Node(context.Background(), r2); !errors.Is(err, node.ErrCorrupt) {
		t.Fatalf("node %s holding another node's bytes: error %v, want ErrCorrupt", r2, err)
	}
	if _, err := s.Node(context.Background(), r1); err != nil {
		t.Fatalf("the intact node: %v", err)
	}
}
