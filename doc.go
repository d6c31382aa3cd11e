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
// Errors wrap the sentinel errors listed under Errors below; test them
// with errors.Is.
//
// # Iterating
//
// [DB.All] and [DB.Scan] return range-over-func iterators
// (iter.Seq2[Record, error]) over one snapshot, in key order. An error is
// yielded as the last pair, with the zero [Record], as [DB.Diff] and
// [DB.DiffWith] do with changes:
//
//	for rec, err := range db.Scan(ctx, arbor.Range{Prefix: []byte("user/")}) {
//		if err != nil {
//			return err
//		}
//		fmt.Printf("%s=%s\n", rec.Key, rec.Value)
//	}
//
// Breaking out of the loop releases the iterator. [DB.NewIterator] is the
// same walk with explicit Next, Key, Value and Close calls.
//
// # Syncing
//
// A client calls [DB.Sync] (once) or [DB.Follow] (live) with
// [SyncOptions]; a server is [NewServer] with [ServerOptions]. SyncOptions,
// ServerOptions, [SyncResult], [SyncProgress], [Overridden], [Token] and
// [FollowOptions] are aliases of the types of package net, so
// `go doc arbor.SyncOptions` shows no fields: they are documented where
// they are declared, at [github.com/arbor-sync/arbor/net.ClientOptions]
// (SyncOptions), [github.com/arbor-sync/arbor/net.ServerOptions],
// [github.com/arbor-sync/arbor/net.SyncResult] and so on:
//
//	go doc github.com/arbor-sync/arbor/net.ClientOptions
//	go doc github.com/arbor-sync/arbor/net.ServerOptions
//
// Likewise [Server] embeds a *net.Server, whose methods (Listen, Serve,
// ListenAndServe, Addr, Fingerprint, SetTokens, Stats, Ready, Drain, GC)
// are documented at [github.com/arbor-sync/arbor/net.Server]. The sync
// protocol and its guarantees are in net/PROTOCOL.md and DESIGN.md.
//
// # Errors
//
// Every error the package returns that a caller may branch on wraps one of
// these sentinels (besides context.Canceled and context.DeadlineExceeded
// when a ctx ends). Each is the same value as the sentinel of the package
// that detects it, so errors.Is matches either name.
//
// Opening and closing a store:
//
//   - [ErrLocked]: Open of a store that another process (or another open
//     DB) holds.
//   - [ErrNotStore]: Open of a directory that holds other files, or an
//     empty one with Options.MustExist.
//   - [ErrNewerFormat]: Open of a store written by a newer Arbor.
//   - [ErrBadConfig]: Open with an Options.Chunker outside the supported
//     bounds.
//   - [ErrConfigMismatch]: Open with an Options.Chunker or Options.Hash
//     other than the store's; DiffWith between stores of different chunker
//     configurations or hashes.
//   - [ErrClosed]: any call on a closed DB.
//
// Reading and writing:
//
//   - [ErrNotFound]: Get of a key the store does not hold.
//   - [ErrOutOfScope]: a read or write, on a partial replica, of a key
//     outside its scope.
//   - [ErrKeyTooLarge], [ErrValueTooLarge]: Put, Delete or Apply of an
//     empty key, a key over 4096 bytes, or a value over 1 GiB.
//   - [ErrBadInput]: Import of a malformed line (the error names it);
//     Export of a record that TSV cannot carry.
//   - [ErrRefMoved]: an Import that lost a race with another write; nothing
//     was imported.
//
// Integrity (any read, and Verify):
//
//   - [ErrCorrupt]: a node or value whose bytes are damaged.
//   - [ErrNodeNotFound]: a node or value chunk the store does not hold.
//   - [ErrVerify]: Verify found problems; its report lists them all.
//   - [ErrRootNotRetained]: Diff from or to a root the store no longer
//     holds (garbage collection removed it) or never held.
//
// Syncing (Sync, Follow, WatchServer, ServerRoot, and the client's view of
// a Server):
//
//   - [ErrUnauthorized]: the server does not know the token.
//   - [ErrFingerprint]: the server's certificate matches neither the pinned
//     fingerprint nor the CA file, or no trust was configured.
//   - [ErrServerConfigMismatch]: the store's chunker configuration differs
//     from the server's.
//   - [ErrVersion]: the peer speaks another protocol version.
//   - [ErrProtocol]: the peer broke the protocol.
//   - [ErrRootMismatch]: the client's root differed from the server's after
//     a sync (already repaired by a walk when Sync returns).
//   - [ErrForbiddenScope]: a push or sync outside the token's scope.
//   - [ErrNoSyncHistory]: a first sync of a store that already holds
//     records, without SyncOptions.Adopt or Merge.
//   - [ErrUnpushable]: local changes outside the token's write scope,
//     without SyncOptions.DiscardUnpushable.
//   - [ErrRefused]: the server refused a push whole (a content collision).
//   - [ErrFrameTooLarge]: a value too large to push in one frame.
//   - [ErrRemote]: any other error the server reported; the message says
//     what.
package arbor
