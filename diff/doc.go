// Package diff compares prolly trees through node.Source and merges three
// of them with the server's value winning. Its cost grows with the size of
// the difference, not with the size of the trees.
//
// # Diff
//
// Diff streams the changes (key, old value, new value) that turn one tree
// into another, in ascending key order, as an iter.Seq2. The two roots may
// live in different Sources: the local store, a second store, or a remote
// peer serving nodes over the network.
//
// The walk is level-synchronous over key-ordered segments. A segment pairs
// the subtrees of the two sides that cover the same stretch of keys. One
// step loads the nodes of a segment's taller side (or of both, when their
// levels are equal) and replaces them by their children. When both sides
// are at one level, every subtree whose hash appears on both sides is
// dropped, and the segment is cut into the independent pieces between the
// common subtrees. Equal hashes mean equal records, and so equal last keys.
// A merge walk on the children's last keys therefore finds every common
// subtree, even where an inserted or deleted boundary has shifted the
// neighbouring nodes. When both sides of the front segment are loaded
// leaves, their entries are merge-compared and the changes are yielded.
//
// Invariants:
//   - the segments on the work stack are disjoint and ordered, so the
//     changes come out in strictly ascending key order, and the iteration
//     can stop at any point;
//   - a subtree that both sides hold at the same level and under the same
//     bounds is skipped unloaded; equal roots cost no loads at all, and the
//     empty tree's root is never fetched;
//   - only nodes whose key interval overlaps Options.Range are loaded;
//   - out-of-line values compare by reference hash; blobs are never read;
//   - every loaded node is checked against the hash it was fetched by and
//     against its parent (level, key bounds, record count), so a corrupt
//     or lying Source gives an error wrapping node.ErrCorrupt, never a
//     panic or a silently wrong diff (Options.TrustHashes drops the hash
//     check, about a quarter of a large diff's CPU, for Sources that
//     verify what they return; FuzzDiff wires arbitrary node graphs).
//
// Cost. Each step takes a window of segments from the front of the work
// stack whose loads fit in Options.MaxBatch nodes per side, and asks each
// Source for them in one Nodes call (the two sides concurrently). A diff
// whose frontier fits in a batch therefore costs one round trip per tree
// level per side. For d scattered changes in trees of height h, about
// 2·d·h nodes are loaded at most (a changed leaf and its ancestors on
// each side), and fewer where changes share ancestors: TestDiffNodeBudget
// and BenchmarkDiff1M report the measured multiple. Memory does not grow
// with the diff's length: Diff holds roughly height × MaxBatch decoded
// nodes per side at most, plus the pending segments (hashes and bounds). A
// segment needing more than a batch is cut at a subtree boundary of its
// larger side. The other side's subtree that straddles the cut goes to
// both pieces, clipped, so it may be loaded twice. That is at most one
// extra node per cut.
//
// # Merge
//
// Merge is the three-way merge of a sync. From a base root (the last state
// both sides agreed on), a local root and a server root, it diffs base
// against each side and joins the two change streams by key. A key changed
// on one side only is sent to the other side. A key changed on both sides
// takes the server's version. If the two versions differ, the local change
// is reported as overridden. Every change in the result carries the value
// currently on the side it is applied to as Old. Applying ToServer to the
// server and ToLocal to the local side leaves both at the same records.
package diff
