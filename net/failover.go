package net

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"strings"
	"syscall"

	"github.com/quic-go/quic-go"
)

// Failover. A client may name several servers of one cluster
// (ClientOptions.Servers): servers that serve the same dataset and present
// one certificate, so that one pin trusts them all. Sync, Root and Watch
// try them in order, and when connecting fails or the connection dies (the
// server was killed, restarted, drained, or stopped answering) they try
// the next one, wrapping around the list once. An error that another server
// would give again (a refused token, a certificate that does not match the
// pin, a protocol violation, a store that cannot sync without a choice) or
// the caller's own cancellation ends the attempt at once.
//
// A sync that fails over resumes where it stopped: the nodes a walk
// fetched are already stored (a stored node heads a complete subtree, so
// the next walk skips it), and a push whose reply was lost is re-sent, which
// the server accepts as a change to the value it already holds.

// ServerList returns the servers o names, in the order they are tried:
// Server, then Servers, without repeats or empty names.
func (o ClientOptions) ServerList() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range append([]string{o.Server}, o.Servers...) {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// serverList returns o.ServerList(), checking that there is at least one
// server and that every address is host:port.
func serverList(o ClientOptions) ([]string, error) {
	servers := o.ServerList()
	if len(servers) == 0 {
		return nil, errors.New("no server address given (ClientOptions.Server or Servers)")
	}
	for _, s := range servers {
		if _, _, err := stdnet.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("server address %q: %w", s, err)
		}
	}
	return servers, nil
}

// maxAttempts is how many connections an operation over servers may make:
// one with a single server (Follow and callers retry with backoff), else
// twice through the list.
func maxAttempts(servers []string) int {
	if len(servers) == 1 {
		return 1
	}
	return 2 * len(servers)
}

// tryServers calls attempt with opts narrowed to one server, the servers in
// turn, while it fails with an error that another server may not give
// (canFailOver), at most maxAttempts times. It returns the server of the
// last attempt, how many times it failed over, and the last attempt's
// error. attempt may change *opts for the attempts after it (a pin learned
// on first use). Each failover is logged at Warn.
func tryServers(ctx context.Context, opts *ClientOptions, servers []string, what string, attempt func(ClientOptions) error) (server string, failovers int, err error) {
	limit := maxAttempts(servers)
	for i := 0; ; i++ {
		o := *opts
		o.Server, o.Servers = servers[i%len(servers)], nil
		err = attempt(o)
		if err == nil || !canFailOver(ctx, err) {
			return o.Server, i, err
		}
		if i+1 >= limit {
			if limit > 1 {
				err = fmt.Errorf("%w (no server of %s completed it in %d attempts)", err, strings.Join(servers, ", "), limit)
			}
			return o.Server, i, err
		}
		next := servers[(i+1)%len(servers)]
		opts.Logger.Warn("arbor: server failed, failing over", "op", what, "server", o.Server, "next", next, "attempt", i+1, "err", err)
	}
}

// canFailOver reports whether err, from an operation against one server,
// may not recur on another server of its cluster: the connection could not
// be made or died (a timeout, a reset, a closed connection, a server
// shutting down, draining, busy or failing internally). Refusals every
// server would repeat, local failures and the caller's cancellation are
// not retried.
func canFailOver(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	for _, final := range []error{ErrUnauthorized, ErrFingerprint, ErrProtocol, ErrFrameTooLarge,
		ErrRootMismatch, ErrConfigMismatch, ErrForbiddenScope, ErrRefused, ErrVersion,
		ErrNoSyncHistory, ErrUnpushable, errWrittenDuringSync, context.Canceled} {
		if errors.Is(err, final) {
			return false
		}
	}
	var pe *peerError
	if errors.As(err, &pe) {
		return transientCode(pe.code)
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		return ae.ErrorCode == 0 || transientCode(uint64(ae.ErrorCode))
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return se.ErrorCode == 0 || transientCode(uint64(se.ErrorCode))
	}
	var te *quic.TransportError
	if errors.As(err, &te) {
		// A TLS failure (an untrusted certificate under a CA file) is the
		// certificate's, not the connection's.
		return !te.ErrorCode.IsCryptoError()
	}
	var (
		idle  *quic.IdleTimeoutError
		hs    *quic.HandshakeTimeoutError
		reset *quic.StatelessResetError
		vn    *quic.VersionNegotiationError
		ne    stdnet.Error
	)
	if errors.As(err, &idle) || errors.As(err, &hs) || errors.As(err, &reset) || errors.As(err, &vn) || errors.As(err, &ne) {
		return true
	}
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, os.ErrDeadlineExceeded, context.DeadlineExceeded, stdnet.ErrClosed,
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, syscall.ENETUNREACH, syscall.EHOSTUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// transientCode reports the error codes of a server that may be fine on
// another server: it is busy or draining (codeLimit), unavailable, failed
// internally, or asked for a reconnection.
func transientCode(code uint64) bool {
	switch code {
	case codeLimit, codeUnavailable, codeInternal, codeRegrant:
		return true
	}
	return false
}

// preferServer returns opts with server, when it is one of them, first in
// its list and the others after it in their order, wrapping around: a
// client that keeps syncing (Follow) starts at the server that served it
// last instead of waiting on a dead one first every time.
func preferServer(opts ClientOptions, server string) ClientOptions {
	servers := opts.ServerList()
	for i, s := range servers {
		if s == server && i > 0 {
			opts.Server = ""
			opts.Servers = append(append([]string(nil), servers[i:]...), servers[:i]...)
			break
		}
	}
	return opts
}
