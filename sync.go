package arbor

import (
	"context"

	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/scope"
)

// Sync types, shared with package net.
type (
	// SyncOptions configure DB.Sync: the server address (Server, or
	// Servers: the servers of one cluster, tried in order, a sync failing
	// over to the next when one cannot be reached or dies midway), the
	// client's token, and how to trust the server (a pinned fingerprint, a
	// CA file, or trust on first use). Fields: see net.ClientOptions
	// (go doc github.com/arbor-sync/arbor/net.ClientOptions).
	SyncOptions = arbornet.ClientOptions
	// SyncResult describes a completed sync: records pulled and pushed, the
	// local changes the server's values overrode, bytes on the wire, round
	// trips, the new root, and the server that served it after how many
	// failovers. Fields: see net.SyncResult.
	SyncResult = arbornet.SyncResult
	// Overridden is a local change that lost to the server's value.
	Overridden = arbornet.Overridden
	// SyncProgress reports how far a sync has come.
	SyncProgress = arbornet.Progress
	// ServerOptions configure a Server: tokens, certificate directory,
	// retention, limits per peer, the Validate hook. Fields: see
	// net.ServerOptions (go doc github.com/arbor-sync/arbor/net.ServerOptions).
	ServerOptions = arbornet.ServerOptions
	// Token is one client credential: the secret and the client id.
	Token = arbornet.Token
	// FollowOptions tune DB.Follow: a callback for every sync, and the
	// retry backoff.
	FollowOptions = arbornet.FollowOptions
)

// Sync and server errors.
var (
	ErrUnauthorized = arbornet.ErrUnauthorized
	ErrFingerprint  = arbornet.ErrFingerprint
	ErrRootMismatch = arbornet.ErrRootMismatch
	ErrProtocol     = arbornet.ErrProtocol
	// ErrForbiddenScope reports a push outside the token's write scope (or
	// a sync whose scope has no key in the token's read scope).
	ErrForbiddenScope = arbornet.ErrForbiddenScope
	// ErrOutOfScope reports a local write outside a partial replica's scope.
	ErrOutOfScope = scope.ErrOutOfScope
	// ErrNoSyncHistory reports a first sync of a store that already holds
	// records: choose SyncOptions.Adopt or SyncOptions.Merge.
	ErrNoSyncHistory = arbornet.ErrNoSyncHistory
	// ErrUnpushable reports local changes outside the token's write scope
	// (see SyncOptions.DiscardUnpushable); they stay local.
	ErrUnpushable = arbornet.ErrUnpushable
	// ErrVersion reports a server or client of another protocol version.
	ErrVersion = arbornet.ErrVersion
	// ErrRefused reports a push the server refused whole because its
	// content collides with stored content (a crafted hash collision).
	ErrRefused = arbornet.ErrRefused
)

// LoadTokens reads a tokens file: one "TOKEN CLIENT_ID" per line.
func LoadTokens(path string) ([]Token, error) { return arbornet.LoadTokens(path) }

// Sync brings the store up to date with a server in both directions: it
// pushes the local changes since the last sync, the server's value winning
// every conflict (reported in SyncResult.Overridden), and pulls everything
// else that changed on the server. The first sync of an empty store is a
// clone; the first sync of a store that already holds records fails with
// ErrNoSyncHistory unless SyncOptions.Adopt or Merge says what to do with
// them. Writes made while Sync runs stay local changes for the next sync.
// An interrupted sync leaves the store at its old state and keeps what it
// fetched for the next attempt. Given several servers (SyncOptions.Servers)
// it fails over between them, resuming with what it fetched
// (SyncResult.Server, Failovers).
func (db *DB) Sync(ctx context.Context, opts SyncOptions) (*SyncResult, error) {
	defer db.scope.Store(nil) // a sync may set, widen or narrow the scope
	return arbornet.Sync(ctx, db.store, opts)
}

// Follow keeps the DB in sync with a server until ctx ends (it then
// returns nil): it syncs at once, then again whenever the server announces
// a new root and whenever a local write (Put, Delete, Apply) leaves changes
// to push, so both directions propagate within a round trip or two. Lost
// connections and failed syncs are retried with backoff; a refused token, an
// untrusted certificate or a different chunker config end Follow with that
// error. Do not call Sync on the DB while Follow runs.
func (db *DB) Follow(ctx context.Context, opts SyncOptions, fo FollowOptions) error {
	onSync := fo.OnSync
	fo.OnSync = func(res *SyncResult, err error) {
		db.scope.Store(nil) // a sync may set, widen or narrow the scope
		if onSync != nil {
			onSync(res, err)
		}
	}
	defer db.scope.Store(nil)
	return arbornet.Follow(ctx, db.store, opts, fo)
}

// WatchServer calls fn with a server's root at once and each time it moves,
// until ctx ends (then it returns nil) or fn returns an error. It moves no
// records: use it to learn of changes, or Follow to apply them.
func WatchServer(ctx context.Context, opts SyncOptions, fn func(root Hash) error) error {
	return arbornet.Watch(ctx, opts, fn)
}

// ServerRoot asks a server for its current root without syncing: compare it
// with Status().Base for a one-round-trip integrity audit. Given several
// servers, it asks the first that answers.
func ServerRoot(ctx context.Context, opts SyncOptions) (Hash, error) {
	return arbornet.Root(ctx, opts)
}

// ServerRootFrom is ServerRoot, also naming the server that answered.
func ServerRootFrom(ctx context.Context, opts SyncOptions) (root Hash, server string, err error) {
	return arbornet.RootFrom(ctx, opts)
}

// Server serves a DB's records to sync clients over QUIC. The DB's head is
// the authoritative state; local writes through the DB are published to
// clients on their next sync.
type Server struct {
	*arbornet.Server
}

// NewServer prepares a server for db. It creates a self-signed certificate
// in opts.CertDir if there is none; clients pin its Fingerprint.
func NewServer(db *DB, opts ServerOptions) (*Server, error) {
	s, err := arbornet.NewServer(db.store, opts)
	if err != nil {
		return nil, err
	}
	return &Server{s}, nil
}
