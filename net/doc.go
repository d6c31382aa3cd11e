// Package net synchronises Arbor stores between one authoritative server
// and many clients over QUIC, with the server's value winning every
// conflict.
//
// A sync is one QUIC connection (TLS 1.3, ALPN "arbor/2"; the client pins
// the server's certificate fingerprint or verifies it against a CA file).
// Every request/response exchange uses its own bidirectional stream of
// length-prefixed frames (see PROTOCOL.md):
//
//  1. Hello/Welcome: the client presents its token and its base (the last
//     server root it agreed on); the server answers with its current root.
//     Equal roots and no local changes end the sync in one round trip; this
//     is also the integrity audit (Root).
//  2. Push: the client sends its local changes (base→head), each with the
//     hash of the value it started from. The server decides every change
//     before it stores anything: it applies a change only if the key still
//     holds that value (a token writes only inside its read scope) and
//     Validate accepts it, stores only the values it applies (refusing
//     content whose address holds other bytes), commits them atomically,
//     and reports the rest as overridden. The server builds its own tree
//     from the values; it never takes nodes from a client.
//  3. Pull: if the server retains the client's base, it diffs base→current
//     and streams only the changed records, leaving out the client's own
//     accepted changes. Otherwise the client walks the server's tree level
//     by level, in batched requests, skipping every subtree it already
//     holds and verifying the hash of every node it receives.
//  4. The client commits its new base and head atomically, re-applying any
//     local writes made during the sync, after checking that its recomputed
//     root equals the server's.
//
// A walk sends, with each node it asks for, a hint: the client's own node at
// the same level and keys. The server answers with an entry-level delta
// against the hint when that is smaller, so a walk against a slightly stale
// base costs about what the changed entries cost, not whole nodes.
//
// # Partial sync
//
// A client may replicate only a scope (ClientOptions.Scope: key prefixes and
// ranges, package scope), stored in the client's metadata by its first sync;
// a token may be limited to read and write scopes (Token.Read, Token.Write;
// read= and write= in a tokens file). The scope synced is the client's
// intersected with the token's read scope, which Welcome carries. A partial
// replica always walks, descending only into children whose key interval
// overlaps its scope, so it holds the server's tree pruned to the scope,
// with base = the server's root: re-hashing the stored nodes up to that root
// (tree.Store.VerifyScope) proves its records are exactly the server's in
// scope. Its pushes, replays and counts diff only the scope's ranges;
// widening fetches only nodes overlapping the added part; a shrunk scope is
// garbage-collected (tree.Store.GCScope). The server shows a session only
// children overlapping the token's read scope and value blobs of keys in it,
// refuses a push with any key outside the write scope (ErrForbiddenScope,
// nothing applied; the client finds such changes first, ErrUnpushable), and runs ServerOptions.Validate on each change it would
// apply (a rejection comes back as Overridden.Reason).
//
// # Several servers
//
// ClientOptions.Servers names the servers of one cluster (one dataset, one
// certificate). Sync, Root and Watch try them in order and fail over to the
// next when connecting fails or the connection dies, never on a refusal
// every server would repeat or on cancellation; a failed-over sync resumes
// with the nodes already stored and re-sends a push whose reply was lost
// (see failover.go and SyncResult.Server, Failovers).
//
// Memory is bounded on both sides: records and nodes are streamed and
// applied in batches; a walk fetches the lowest pending level first, so at
// most Parallel × BatchNodes nodes (8192 by default, some 32 MiB of typical
// leaves) and their pending parents are held; a walk into an empty store,
// which streams whole subtrees (GetTree), holds at most 16 MiB of fetched
// nodes and blobs waiting to be stored, plus a path of pending branches per
// stream (a
// large initial clone, stored as a bulk load, also buffers its nodes for
// sstable ingestion: up to three 32 MiB spills, the one filling and two
// being written); a push is bounded by ServerOptions.MaxPushBytes.
//
// The server keeps recently published roots as refs "retain/<seq>" and pins
// the roots live sessions use; collect garbage with Server.GC, which keeps
// both. quic-go may warn on stderr that it could not raise the UDP receive
// buffer; raise net.core.rmem_max, or set
// QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true.
//
// Invariants: a client stores a fetched node only once its whole subtree is
// stored, so holding a node means holding its subtree (on a partial
// replica, its subtree pruned to the scope), even after an interrupted walk; the server serves only nodes and blobs reachable from a
// root it published to that session; every frame read and write has a
// deadline; no message is trusted for sizes before it is checked against
// the frame limit.
package net
