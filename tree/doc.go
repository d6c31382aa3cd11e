// Package tree stores Arbor's prolly trees in Pebble and reads and edits them.
//
// A Store holds content-addressed nodes and value blobs, named refs (a ref
// names a root hash, such as the current head), and metadata. Trees are
// persistent: an edit writes new nodes along the touched paths and returns a
// new root, and every old root stays readable while anything retains it.
//
// Invariants:
//   - Every node stored under key "n"+h hashes to h, and every node reachable
//     from a ref is present. A node may be stored as a delta of a node stored
//     whole (its base); the base is then stored too, and reading rebuilds
//     the node and checks its hash (delta.go). A Batch writes its new nodes and its ref moves in
//     one Pebble batch, so after a crash a reopened store shows either the
//     old refs or the new ones, each with its complete tree.
//   - The shape of a tree is a pure function of its records and the store's
//     chunker.Config (history independence): Apply, Build and any order of
//     edits reach the same root for the same records.
//   - Garbage collection deletes only nodes no ref reaches, and excludes
//     every open Batch, iterator and read while it runs.
//   - The decoded-node cache holds only stored nodes: a Batch adds its nodes
//     after its commit, and garbage collection empties the cache and starts
//     a new cache generation, so a node read concurrently with a sweep is
//     not cached afterwards. HasNode and Batch (which skips writing a cached
//     node) rely on this.
//
// A Store is safe for concurrent use. Reads never block each other; writers
// serialise on ref updates only.
package tree
