package diff_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/arbor-sync/arbor/diff"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// commit applies edits to root in s and returns the new root.
func commit(s *tree.Store, root node.Hash, edits ...tree.Edit) node.Hash {
	b, err := s.NewBatch()
	if err != nil {
		log.Fatal(err)
	}
	r, err := b.Apply(context.Background(), root, edits)
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Commit(context.Background()); err != nil {
		log.Fatal(err)
	}
	return r
}

func set(k, v string) tree.Edit { return tree.Edit{Key: []byte(k), Value: []byte(v)} }
func del(k string) tree.Edit    { return tree.Edit{Key: []byte(k), Delete: true} }

func show(v *node.Value) string {
	if v == nil {
		return "-"
	}
	return string(v.Inline)
}

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "arbor-example-")
	defer os.RemoveAll(dir)
	s, err := tree.Open(dir, &tree.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	base := commit(s, node.EmptyRoot(node.XXH3), set("a", "1"), set("b", "2"), set("c", "3"))
	local := commit(s, base, set("a", "local"), del("b"))
	server := commit(s, base, set("b", "server"), set("d", "4"))

	// What the server changed since base.
	for c, err := range diff.Diff(ctx, s, base, s, server, diff.Options{}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %s -> %s\n", c.Kind(), c.Key, show(c.Old), show(c.New))
	}

	// Merge: the server wins the conflict on b.
	res, err := diff.Merge(ctx, s, s, s, base, local, server, diff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range res.ToServer {
		fmt.Printf("to server: %s = %s\n", c.Key, show(c.New))
	}
	for _, c := range res.ToLocal {
		fmt.Printf("to local: %s = %s\n", c.Key, show(c.New))
	}
	for _, c := range res.Overridden {
		fmt.Printf("overridden: %s (local %s, server %s)\n", c.Key, show(c.Local), show(c.Server))
	}
	// Output:
	// modified b: 2 -> server
	// added d: - -> 4
	// to server: a = local
	// to local: b = server
	// to local: d = 4
	// overridden: b (local -, server server)
}
