package arbor

import (
	"github.com/arbor-sync/arbor/chunker"
	arbornet "github.com/arbor-sync/arbor/net"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
)

// More sentinel errors: the ones of the packages below that reach a
// caller of this package and are not declared beside the methods that
// return them (arbor.go, sync.go). The package documentation's Errors
// section lists every sentinel of the package in one place, with the
// methods that return it.
var (
	// ErrNewerFormat reports, from Open, a store written by a newer Arbor
	// whose format this one cannot read.
	ErrNewerFormat = tree.ErrNewerFormat
	// ErrBadConfig reports, from Open, an Options.Chunker outside the
	// supported bounds.
	ErrBadConfig = chunker.ErrBadConfig
	// ErrKeyTooLarge reports a write (Put, Delete, Apply) of an empty key
	// or of one longer than 4096 bytes. Nothing of the call was written.
	ErrKeyTooLarge = tree.ErrKeyTooLarge
	// ErrValueTooLarge reports a write of a value over 1 GiB. Nothing of
	// the call was written.
	ErrValueTooLarge = tree.ErrValueTooLarge
	// ErrNodeNotFound reports a tree node or value chunk the store does not
	// hold: a damaged store (Verify lists them all), or a write on a
	// partial replica that needs a node outside its scope (Apply says so).
	// A missing key is ErrNotFound instead.
	ErrNodeNotFound = node.ErrNotFound
	// ErrRefMoved reports an Import that lost a race with another write
	// to the DB: nothing of the Import was written, and it can be retried.
	ErrRefMoved = tree.ErrRefMoved
	// ErrFrameTooLarge reports, from Sync, a local value too large to push
	// in one frame (SyncOptions.MaxFrame, 16 MiB by default), or a peer
	// frame over the limit. Nothing was pushed.
	ErrFrameTooLarge = arbornet.ErrFrameTooLarge
	// ErrServerConfigMismatch reports, from Sync and Follow, a store whose
	// chunker configuration differs from the server's: their roots can
	// never be equal. (ErrConfigMismatch is the same failure between two
	// local stores, as in DiffWith.)
	ErrServerConfigMismatch = arbornet.ErrConfigMismatch
	// ErrRemote reports, from Sync and Follow, an error the peer sent that
	// matches no other sentinel (an internal error or a limit on the
	// server); its message is included.
	ErrRemote = arbornet.ErrRemote
)
