package net

import (
	"context"
	"sync/atomic"
	"time"
)

// ServerStats is a snapshot of a server's counters since it started, for
// metrics and status pages. Counters only grow; gauges say what is now.
type ServerStats struct {
	Sessions   int64 // gauge: authenticated sessions open
	Handshakes int64 // gauge: connections not yet authenticated
	Watchers   int64 // gauge: Watch exchanges open
	MemoryUsed int64 // gauge: bytes held for peers (frame buffers, buffered pushes)

	SessionsStarted int64
	// Refused counts connections and sessions refused, by reason:
	// "busy" (handshake or session limit), "unauthorized", "version",
	// "config", "handshake" (any other handshake failure).
	Refused map[string]int64
	// ExchangesFailed counts exchanges that ended their session with an
	// error (a broken protocol, a limit, a stalled peer).
	ExchangesFailed int64
	// Syncs counts served requests by path: "walk" (GetNodes), "tree"
	// (GetTree), "changes" (GetChanges, the retained path), "audit"
	// (a Hello with the audit flag), "push".
	Syncs map[string]int64

	BytesReceived, BytesSent int64 // over sessions that have ended or are open

	Pushes            int64
	ChangesAccepted   int64
	ChangesOverridden int64 // compare-and-set losses and rejections
	ChangesRejected   int64 // by ServerOptions.Validate
	PushesRefused     int64 // address conflicts (ErrRefused)
	RetainedRoots     int64 // gauge
}

// serverCounters are the atomic counters behind ServerStats.
type serverCounters struct {
	sessionsStarted, exchangesFailed, watchers                                    atomic.Int64
	refusedBusy, refusedUnauthorized, refusedVersion, refusedConfig, refusedOther atomic.Int64
	walk, tree, changes, audit, push                                              atomic.Int64
	bytesIn, bytesOut                                                             atomic.Int64
	accepted, overridden, rejected, refusedPushes                                 atomic.Int64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	st := ServerStats{
		Sessions:        s.sessions.Load(),
		Handshakes:      s.handshakes.Load(),
		Watchers:        c.watchers.Load(),
		MemoryUsed:      s.mem.used.Load(),
		SessionsStarted: c.sessionsStarted.Load(),
		Refused: map[string]int64{
			"busy": c.refusedBusy.Load(), "unauthorized": c.refusedUnauthorized.Load(),
			"version": c.refusedVersion.Load(), "config": c.refusedConfig.Load(), "handshake": c.refusedOther.Load(),
		},
		ExchangesFailed: c.exchangesFailed.Load(),
		Syncs: map[string]int64{
			"walk": c.walk.Load(), "tree": c.tree.Load(), "changes": c.changes.Load(), "audit": c.audit.Load(), "push": c.push.Load(),
		},
		BytesReceived:     c.bytesIn.Load(),
		BytesSent:         c.bytesOut.Load(),
		Pushes:            c.push.Load(),
		ChangesAccepted:   c.accepted.Load(),
		ChangesOverridden: c.overridden.Load(),
		ChangesRejected:   c.rejected.Load(),
		PushesRefused:     c.refusedPushes.Load(),
		RetainedRoots:     int64(s.retain.size()),
	}
	s.liveMu.Lock()
	for sess := range s.live {
		st.BytesReceived += sess.c.recv.Load()
		st.BytesSent += sess.c.sent.Load()
	}
	s.liveMu.Unlock()
	return st
}

// countRefused counts a refused handshake by the error that refused it.
func (c *serverCounters) countRefused(err error) {
	switch errorCode(err) {
	case codeLimit:
		c.refusedBusy.Add(1)
	case codeUnauthorized:
		c.refusedUnauthorized.Add(1)
	case codeVersion:
		c.refusedVersion.Add(1)
	case codeConfig:
		c.refusedConfig.Add(1)
	default:
		c.refusedOther.Add(1)
	}
}

// Ready reports whether the server is listening and not draining.
func (s *Server) Ready() bool {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	return s.ln != nil && !s.draining
}

// Drain refuses new connections (at once, "server draining", code 8) and
// waits until every session has ended or ctx is done, whichever comes
// first; cancelling Serve's context then ends the rest. Sessions in the
// middle of a sync finish it (an interrupted walk resumes on the client's
// next sync without refetching what it stored).
func (s *Server) Drain(ctx context.Context) {
	s.lnMu.Lock()
	s.draining = true
	s.lnMu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.sessions.Load()+s.handshakes.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
