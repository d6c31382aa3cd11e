package net

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by this package wrap them with the peer,
// message, key or hash concerned; test with errors.Is.
var (
	// ErrUnauthorized reports a token the server does not know, or none.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrFingerprint reports a server whose certificate does not match the
	// pinned fingerprint, or an unknown server when no pin, trust flag or CA
	// file was given.
	ErrFingerprint = errors.New("server certificate not trusted")
	// ErrProtocol reports a peer that broke the protocol: a malformed or
	// unexpected message, a wrong hash, a request for something it was never
	// shown.
	ErrProtocol = errors.New("protocol error")
	// ErrFrameTooLarge reports a frame over the negotiated maximum.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrRootMismatch reports a client whose recomputed root differs from
	// the server's after a sync. Sync repairs it with a walk before
	// returning this error, so the store is consistent with the server.
	ErrRootMismatch = errors.New("root mismatch after sync")
	// ErrConfigMismatch reports a client store whose chunker configuration
	// or hash differs from the server's: their trees can never have
	// equal roots.
	ErrConfigMismatch = errors.New("store configuration (node sizes or hash) differs from the server's")
	// ErrForbiddenScope reports a request outside the token's scope: a push
	// with a key outside its write scope (the whole push is refused and
	// nothing applied), or a sync whose scope lies outside its read scope.
	ErrForbiddenScope = errors.New("outside the token's scope")
	// ErrRefused reports a push the server refused whole because storing
	// it would have replaced stored content: a value or node whose address
	// (hash) is already stored with other bytes, which only a crafted hash
	// collision produces. Nothing of the push was stored.
	ErrRefused = errors.New("push refused")
	// ErrVersion reports a peer that speaks another version of the
	// protocol; the message says which side to upgrade.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrNoSyncHistory reports a sync of a store that holds records but
	// has no base: the caller must choose ClientOptions.Adopt or Merge.
	ErrNoSyncHistory = errors.New("store has records and no sync history")
	// ErrUnpushable reports local changes outside the token's write scope;
	// nothing was pushed or changed (see ClientOptions.DiscardUnpushable).
	ErrUnpushable = errors.New("local changes outside the write scope")
	// ErrRemote reports an error the peer sent; its message is included.
	ErrRemote = errors.New("peer reported an error")
)

// remoteError converts an Error frame into a Go error.
func remoteError(peer string, m errorMsg) error {
	var base error
	switch m.Code {
	case codeUnauthorized:
		base = ErrUnauthorized
	case codeProtocol, codeForbidden:
		base = ErrProtocol
	case codeTooLarge:
		base = ErrFrameTooLarge
	case codeConfig:
		base = ErrConfigMismatch
	case codeScope:
		base = ErrForbiddenScope
	case codeRefused:
		base = ErrRefused
	case codeVersion:
		base = ErrVersion
	default:
		base = ErrRemote
	}
	return &peerError{peer: peer, base: base, msg: m.Message, code: m.Code}
}

// peerError is an error the peer reported. It prints the peer's message
// and matches the sentinel for its code.
type peerError struct {
	peer string
	base error
	msg  string
	code uint64 // the error code the peer sent
}

func (e *peerError) Error() string {
	if strings.Contains(e.msg, e.base.Error()) {
		return e.peer + " says: " + e.msg
	}
	return e.peer + " says: " + e.base.Error() + ": " + e.msg
}

func (e *peerError) Unwrap() error { return e.base }

// errorCode maps a local error to the code sent to the peer.
func errorCode(err error) uint64 {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return codeUnauthorized
	case errors.Is(err, ErrFrameTooLarge):
		return codeTooLarge
	case errors.Is(err, ErrConfigMismatch):
		return codeConfig
	case errors.Is(err, ErrForbiddenScope):
		return codeScope
	case errors.Is(err, ErrRefused):
		return codeRefused
	case errors.Is(err, ErrVersion):
		return codeVersion
	case errors.Is(err, errForbidden):
		return codeForbidden
	case errors.Is(err, errLimit):
		return codeLimit
	case errors.Is(err, ErrProtocol):
		return codeProtocol
	}
	return codeInternal
}

var (
	// errWrittenDuringSync reports a local write made during a sync that
	// the sync's new scope cannot hold; the next sync pushes it.
	errWrittenDuringSync = errors.New("written during the sync")
	errForbidden         = fmt.Errorf("%w: not shown to this session", ErrProtocol)
	errLimit             = errors.New("session limit exceeded")
)
