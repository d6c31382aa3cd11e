package arbor_test

import (
	"bytes"
	"context"
	"errors"
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

// Diff streams what changed between two states, in key order. Its cost
// grows with the number of changes, not with the size of the store.
func ExampleDB_Diff() {
	dir, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	db.Import(ctx, strings.NewReader("a\t1\nb\t2\nc\t3\n"), arbor.ImportOptions{})
	before, _ := db.Root(ctx)
	db.Apply(ctx, new(arbor.Batch).Put([]byte("b"), []byte("20")).Delete([]byte("c")).Put([]byte("d"), []byte("4")))
	after, _ := db.Root(ctx)

	for c, err := range db.Diff(ctx, before, after, arbor.DiffOptions{}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %q -> %q\n", c.Kind(), c.Key, c.Old, c.New)
	}
	// Output:
	// modified b: "2" -> "20"
	// removed c: "3" -> ""
	// added d: "" -> "4"
}

// A server and a client in one process: the client clones the server,
// both sides change the same key, and the server's value wins.
func ExampleDB_Sync() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(tmp)

	serverDB, err := arbor.Open(tmp+"/server", &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer serverDB.Close()
	serverDB.Put(ctx, []byte("greeting"), []byte("hello"))

	srv, err := arbor.NewServer(serverDB, arbor.ServerOptions{
		Tokens:  []arbor.Token{{Token: "s3cret", ClientID: "laptop"}},
		CertDir: tmp + "/tls",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	clientDB, err := arbor.Open(tmp+"/client", &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer clientDB.Close()
	opts := arbor.SyncOptions{Server: srv.Addr().String(), Token: "s3cret", Fingerprint: srv.Fingerprint()}
	if _, err := clientDB.Sync(ctx, opts); err != nil { // the first sync is a clone
		log.Fatal(err)
	}

	// Both sides change the same key; the client also adds one.
	serverDB.Put(ctx, []byte("greeting"), []byte("hello from the server"))
	clientDB.Put(ctx, []byte("greeting"), []byte("hello from the laptop"))
	clientDB.Put(ctx, []byte("note"), []byte("written offline"))

	res, err := clientDB.Sync(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range res.Overridden {
		fmt.Printf("overridden %s: wanted %q, server has %q\n", o.Key, *o.Local, *o.Server)
	}
	v, _ := clientDB.Get(ctx, []byte("greeting"))
	fmt.Println("client sees:", string(v))
	v, _ = serverDB.Get(ctx, []byte("note"))
	fmt.Println("server got:", string(v))
	cr, _ := clientDB.Root(ctx)
	sr, _ := serverDB.Root(ctx)
	fmt.Println("roots equal:", cr == sr)
	// Output:
	// overridden greeting: wanted "hello from the laptop", server has "hello from the server"
	// client sees: hello from the server
	// server got: written offline
	// roots equal: true
}

// Reading a missing key gives an error wrapping ErrNotFound; Close
// reports whether the store closed cleanly.
func ExampleDB_Get() {
	dir, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := arbor.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Put(ctx, []byte("user/1"), []byte("ada")); err != nil {
		log.Fatal(err)
	}
	v, err := db.Get(ctx, []byte("user/1"))
	fmt.Printf("%s %v\n", v, err)
	_, err = db.Get(ctx, []byte("user/2"))
	fmt.Println(errors.Is(err, arbor.ErrNotFound))
	if err := db.Close(); err != nil {
		log.Fatal(err)
	}
	_, err = db.Get(ctx, []byte("user/1"))
	fmt.Println(errors.Is(err, arbor.ErrClosed))
	// Output:
	// ada <nil>
	// true
	// true
}

// Scan ranges over the records of a Range in key order; an error, if
// any, comes as the last pair. Leaving the loop early releases the
// iterator.
func ExampleDB_Scan() {
	dir, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.Import(ctx, strings.NewReader("a/1\tx\na/2\ty\na/3\tz\nb/1\tw\n"), arbor.ImportOptions{})

	for rec, err := range db.Scan(ctx, arbor.Range{Prefix: []byte("a/")}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s=%s\n", rec.Key, rec.Value)
	}
	// [Start, End), and an early break.
	for rec, err := range db.Scan(ctx, arbor.Range{Start: []byte("a/2"), End: []byte("b/")}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("first from a/2: %s\n", rec.Key)
		break
	}
	// Output:
	// a/1=x
	// a/2=y
	// a/3=z
	// first from a/2: a/2
}

// All ranges over every record. The slices are only valid in the loop
// body: clone what you keep.
func ExampleDB_All() {
	dir, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.Import(ctx, strings.NewReader("k2\tv2\nk1\tv1\nk3\tv3\n"), arbor.ImportOptions{})

	var keys [][]byte
	for rec, err := range db.All(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		keys = append(keys, bytes.Clone(rec.Key))
	}
	fmt.Printf("%s\n", keys)
	// Output: [k1 k2 k3]
}

// DiffWith compares two stores: what turns the first one's records into
// the second's. Equal subtrees are skipped by hash, so the cost follows the
// size of the difference.
func ExampleDB_DiffWith() {
	ctx := context.Background()
	open := func() *arbor.DB {
		dir, _ := os.MkdirTemp("", "arbor-example")
		db, err := arbor.Open(dir, &arbor.Options{NoSync: true})
		if err != nil {
			log.Fatal(err)
		}
		return db
	}
	staging, prod := open(), open()
	defer os.RemoveAll(staging.Dir())
	defer os.RemoveAll(prod.Dir())
	defer staging.Close()
	defer prod.Close()

	records := "flag/dark-mode\toff\nflag/search\ton\nflag/beta\toff\n"
	prod.Import(ctx, strings.NewReader(records), arbor.ImportOptions{})
	staging.Import(ctx, strings.NewReader(records), arbor.ImportOptions{})
	staging.Apply(ctx, new(arbor.Batch).Put([]byte("flag/dark-mode"), []byte("on")).Delete([]byte("flag/beta")).Put([]byte("flag/new-ui"), []byte("on")))

	// What a promotion of staging to prod would change.
	for c, err := range prod.DiffWith(ctx, staging, arbor.DiffOptions{}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-8s %s: %q -> %q\n", c.Kind(), c.Key, c.Old, c.New)
	}
	// Output:
	// removed  flag/beta: "off" -> ""
	// modified flag/dark-mode: "off" -> "on"
	// added    flag/new-ui: "" -> "on"
}

// A server with a write validation hook (ServerOptions.Validate; the
// fields of ServerOptions are documented at net.ServerOptions): a change it
// rejects is not applied, and the client is told why in
// SyncResult.Overridden.
func ExampleNewServer() {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, _ := os.MkdirTemp("", "arbor-example")
	defer os.RemoveAll(tmp)

	serverDB, err := arbor.Open(tmp+"/server", &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer serverDB.Close()
	srv, err := arbor.NewServer(serverDB, arbor.ServerOptions{
		Tokens:  []arbor.Token{{Token: "s3cret-token", ClientID: "laptop"}},
		CertDir: tmp + "/tls",
		Validate: func(ctx context.Context, client string, key, value []byte, deleted bool) error {
			if bytes.HasPrefix(key, []byte("config/")) {
				return fmt.Errorf("%s may not change %s", client, key)
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil { // a free port
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	clientDB, err := arbor.Open(tmp+"/client", &arbor.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer clientDB.Close()
	opts := arbor.SyncOptions{Server: srv.Addr().String(), Token: "s3cret-token", Fingerprint: srv.Fingerprint()}
	if _, err := clientDB.Sync(ctx, opts); err != nil { // the first sync: a clone
		log.Fatal(err)
	}
	clientDB.Put(ctx, []byte("notes/1"), []byte("hello"))
	clientDB.Put(ctx, []byte("config/limit"), []byte("9000"))
	res, err := clientDB.Sync(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pushed", res.Pushed, "accepted", res.Accepted)
	for _, o := range res.Overridden {
		fmt.Printf("rejected %s: %s\n", o.Key, o.Reason)
	}
	_, err = clientDB.Get(ctx, []byte("config/limit"))
	fmt.Println("client still holds config/limit:", err == nil)
	// Output:
	// pushed 2 accepted 1
	// rejected config/limit: laptop may not change config/limit
	// client still holds config/limit: false
}
