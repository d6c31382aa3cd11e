// Package cluster runs Arbor as stateless servers over S3-compatible object
// storage and etcd, for datasets and client counts that outgrow one machine.
//
// Nodes and value blobs live in an S3 bucket, in immutable pack objects
// (packs/<id>.pack: the entries, then an index of kind, hash, offset and
// length, then a footer); one commit writes its new entries in one pack
// (several when it exceeds Options.PackBytes). The head root, the retained
// roots and the list of live packs live in etcd under /arbor/<name>/. Each
// server keeps a local cache (a tree.Store that reads through to the
// bucket, and an index from hash to pack, offset and length) that it can
// lose without losing anything.
//
// Invariants:
//   - A pack is never modified after its PUT; a pack's record in etcd is
//     written only after the PUT succeeded, so every recorded pack exists
//     until GC deletes record and object.
//   - The head changes only in an etcd transaction that compares its
//     ModRevision with the one the commit was based on and, in the same
//     transaction, records the commit's packs: a head is never visible
//     before the nodes it needs are recorded.
//   - Every node of a new head that its base lacks (at the same position)
//     is in the commit's own packs; every other node is in the base's, and
//     the base is live (the head, or retained).
//   - A server announces a head (Subscribe, then the sync server's
//     watchers) only after it has indexed every pack recorded up to it.
//   - Bytes read from the bucket are checked against their address before
//     use (tree.Options.CheckAddresses and the Remote read path).
//   - GC deletes a pack only when two GCs at least GCGrace apart both found
//     it recorded and unreachable from the head and every retained root.
//
// The sync server for a cluster is a net.Server with ServerOptions.Cluster
// set (Cluster.NewServer): clients cannot tell it from a single-node
// server, and the servers of one cluster share one certificate.
package cluster
