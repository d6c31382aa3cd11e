package tree

import "errors"

// Sentinel errors. Errors returned by this package wrap them with the
// directory, key or hash concerned; test with errors.Is.
var (
	// ErrNotFound reports a key that the tree does not hold.
	ErrNotFound = errors.New("key not found")
	// ErrNotStore reports a directory that exists, is not empty, and is not
	// an Arbor store.
	ErrNotStore = errors.New("not an arbor store")
	// ErrNewerFormat reports a store written by a newer Arbor.
	ErrNewerFormat = errors.New("store format is newer than this arbor")
	// ErrLocked reports a store already opened by another process or Store.
	ErrLocked = errors.New("store is locked by another process")
	// ErrConfigMismatch reports Options.Chunker or Options.Hash differing
	// from the store's.
	ErrConfigMismatch = errors.New("configuration (node sizes or hash) differs from the store's")
	// ErrClosed reports use of a closed Store.
	ErrClosed = errors.New("store is closed")
	// ErrKeyTooLarge reports an empty key or one over node.MaxKeySize.
	ErrKeyTooLarge = errors.New("key is empty or too large")
	// ErrValueTooLarge reports a value over node.MaxValueSize.
	ErrValueTooLarge = errors.New("value too large")
	// ErrUnsorted reports Build input that is not in strictly ascending key order.
	ErrUnsorted = errors.New("keys not in strictly ascending order")
	// ErrRefMoved reports a Batch whose expected ref value no longer holds.
	ErrRefMoved = errors.New("ref moved concurrently")
	// ErrAddressConflict reports a write, in a store opened with
	// Options.CheckAddresses, of bytes whose hash is the address of
	// different bytes already stored (or being written): a hash collision,
	// which only crafted input produces. Nothing is written under the
	// address.
	ErrAddressConflict = errors.New("address already stored with different bytes")
)
