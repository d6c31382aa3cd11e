// Package arbor is the embedding API of Arbor, a key/value store that keeps
// datasets in sync between one authoritative server and many clients.
//
// Records live in a content-addressed prolly tree (a probabilistic Merkle
// B-tree) stored in Pebble. The root hash summarises the whole state: two
// stores hold the same records exactly when their roots are equal, whatever
// order the writes came in. Comparing roots and walking only the subtrees
// whose hashes differ makes diffs, audits and syncs cost in proportion to
// what changed.
//
// A DB is a store directory opened by one process. Writes go to its head
// tree and are atomic per call; reads see a consistent snapshot (a root).
// All methods are safe for concurrent use.
//
//	db, err := arbor.Open("data", nil)
//	if err != nil { ... }
//	defer db.Close()
//	err = db.Put(ctx, []byte("user/1"), []byte("ada"))
//	v, err := db.Get(ctx, []byte("user/1"))
//
// Errors wrap the sentinel errors below; test them with errors.Is.
package arbor
