// Package node defines Arbor's content-addressed node: its byte format, its
// hash, and a zero-copy decoded view.
//
// A node is either a leaf (level 0), whose entries are (key, value) records,
// or a branch (level ≥ 1), whose entries are (key, child hash, subtree record
// count). Every entry's key is the greatest key stored under that entry, so a
// branch routes key k to its first entry whose key is ≥ k.
//
// Invariants that Decode enforces, so that no caller has to re-check them:
//   - the format version byte is known and the level is ≤ MaxLevel;
//   - keys are non-empty, at most MaxKeySize bytes, and strictly ascending;
//   - every payload is well formed for its level (a leaf value is inline or a
//     reference to an out-of-line value; a branch payload is a hash and a
//     count ≥ 1);
//   - every varint is minimally encoded and there are no trailing bytes, so
//     a node has exactly one encoding: re-encoding a decoded node's entries
//     with Encode reproduces its bytes, and hence its hash.
//
// Decode never panics on any input (it is fuzzed) and does not copy: a Node
// aliases the buffer it was decoded from, which must not change afterwards.
// A Decoder does the same for a stream of nodes with fewer allocations (a
// node then shares a block of node structs and entry tables with others;
// Clone copies out of it).
//
// A node's address is the hash of its encoded bytes under its Alg, which
// byte 0 of every node and value index names and which fixes the width of
// every address inside it: XXH3 (xxh3-128, the default: fast and well
// distributed, but not a cryptographic hash) or BLAKE3 (blake3-256, for
// writers who do not trust each other). A Hash carries its Alg; hashes of
// different algorithms are never equal. See DESIGN.md, Security model.
package node
