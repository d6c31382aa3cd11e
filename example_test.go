package arbor_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/arbor-sync/arbor"
)

func Example() {
	dir, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := arbor.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.Put(ctx, []byte("user/1"), []byte("ada")); err != nil {
		log.Fatal(err)
	}
	// A batch commits atomically.
	b := new(arbor.Batch).Put([]byte("user/2"), []byte("grace")).Put([]byte("user/3"), []byte("edsger")).Delete([]byte("user/1"))
	if err := db.Apply(ctx, b); err != nil {
		log.Fatal(err)
	}
	v, _ := db.Get(ctx, []byte("user/2"))
	fmt.Println(string(v))
	n, _ := db.Count(ctx)
	fmt.Println(n, "records")

	it := db.NewIterator(ctx, arbor.Range{Prefix: []byte("user/")})
	for it.Next() {
		fmt.Printf("%s=%s\n", it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// grace
	// 2 records
	// user/2=grace
	// user/3=edsger
}

// Two stores that hold the same records have the same root hash, whatever
// order the records were written in.
func ExampleDB_Root() {
	ctx := context.Background()
	open := func() *arbor.DB {
		dir, _ := os.MkdirTemp("", "arbor-example")
		db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
		if err != nil {
			log.Fatal(err)
		}
		return db
	}
	a, b := open(), open()
	defer a.Close()
	defer b.Close()
	defer os.RemoveAll(a.Dir())
	defer os.RemoveAll(b.Dir())

	a.Import(ctx, strings.NewReader("x\t1\ny\t2\nz\t3\n"), arbor.ImportOptions{})
	b.Put(ctx, []byte("z"), []byte("3"))
	b.Put(ctx, []byte("x"), []byte("1"))
	b.Put(ctx, []byte("y"), []byte("2"))

	ra, _ := a.Root(ctx)
	rb, _ := b.Root(ctx)
	fmt.Println(ra == rb)
	// Output: true
}
