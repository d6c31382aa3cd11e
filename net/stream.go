package net

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// counters accumulates a connection's traffic at the QUIC stream level.
type counters struct {
	sent, recv atomic.Int64
	exchanges  atomic.Int64
}

// countingStream wraps a QUIC stream, counting bytes and applying a
// deadline to every read and write so that a silent or stalled peer is cut
// off rather than waited on forever.
type countingStream struct {
	st      *quic.Stream
	c       *counters
	timeout time.Duration
}

func (s *countingStream) Read(p []byte) (int, error) {
	if s.timeout > 0 {
		s.st.SetReadDeadline(time.Now().Add(s.timeout))
	}
	n, err := s.st.Read(p)
	s.c.recv.Add(int64(n))
	return n, err
}

func (s *countingStream) Write(p []byte) (int, error) {
	if s.timeout > 0 {
		s.st.SetWriteDeadline(time.Now().Add(s.timeout))
	}
	n, err := s.st.Write(p)
	s.c.sent.Add(int64(n))
	return n, err
}

// exchange is one request/response over its own bidirectional stream.
type exchange struct {
	st   *quic.Stream
	fr   *frameReader
	fw   *frameWriter
	peer string
}

// exchangeWriteBuffer is the size of an exchange's write buffer.
const exchangeWriteBuffer = 64 << 10

func newExchange(st *quic.Stream, c *counters, timeout time.Duration, maxFrame int, peer string) *exchange {
	cs := &countingStream{st: st, c: c, timeout: timeout}
	return &exchange{st: st, fr: newFrameReader(cs, maxFrame), fw: newFrameWriter(cs, maxFrame), peer: peer}
}

// send buffers a frame.
func (e *exchange) send(typ byte, payload []byte) error {
	if err := e.fw.WriteFrame(typ, payload); err != nil {
		return fmt.Errorf("%s: send %s: %w", e.peer, msgName(typ), connErr(e.peer, err))
	}
	return nil
}

// flush sends buffered frames.
func (e *exchange) flush() error {
	if err := e.fw.Flush(); err != nil {
		return fmt.Errorf("%s: send: %w", e.peer, connErr(e.peer, err))
	}
	return nil
}

// closeSend flushes and ends the sending direction.
func (e *exchange) closeSend() error {
	if err := e.flush(); err != nil {
		return err
	}
	return e.st.Close()
}

// recv reads the next frame. An Error frame becomes a Go error; so does a
// frame whose type is not among want.
func (e *exchange) recv(want ...byte) (frame, error) {
	f, err := e.fr.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		err = connErr(e.peer, err)
		var pe *peerError
		if errors.As(err, &pe) {
			return f, err
		}
		return f, fmt.Errorf("%s: receive: %w", e.peer, err)
	}
	if f.Type == msgError {
		m, derr := decodeError(f.Payload)
		if derr != nil {
			return f, fmt.Errorf("%s: %w", e.peer, derr)
		}
		return f, remoteError(e.peer, m)
	}
	for _, t := range want {
		if f.Type == t {
			return f, nil
		}
	}
	return f, fmt.Errorf("%s: %w: unexpected %s message", e.peer, ErrProtocol, msgName(f.Type))
}

// expectEOF reads the end of the peer's side of the stream. Reading it is
// what completes the stream in QUIC and returns its credit, so every
// exchange reads to the end on both sides; a frame there is a protocol
// error.
func (e *exchange) expectEOF() error {
	f, err := e.fr.ReadFrame()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("%s: receive: %w", e.peer, connErr(e.peer, err))
	}
	return fmt.Errorf("%s: %w: unexpected %s message after the end of the exchange", e.peer, ErrProtocol, msgName(f.Type))
}

// fail reports err to the peer on this stream, best effort, and ends it.
func (e *exchange) fail(err error) {
	_ = e.fw.WriteFrame(msgError, errorMsg{Code: errorCode(err), Message: err.Error()}.encode())
	_ = e.fw.Flush()
	_ = e.st.Close()
	e.st.CancelRead(quic.StreamErrorCode(errorCode(err)))
}

// connErr converts a QUIC connection close sent by the peer into the
// matching sentinel error.
func connErr(peer string, err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode != 0 {
		return remoteError(peer, errorMsg{Code: uint64(ae.ErrorCode), Message: ae.ErrorMessage})
	}
	var ie *quic.IdleTimeoutError
	if errors.As(err, &ie) {
		return fmt.Errorf("connection idle too long: %w", err)
	}
	return err
}

// watch closes qc when ctx ends, unblocking every pending read and write.
// The returned func stops watching.
func watch(ctx context.Context, qc *quic.Conn) func() bool {
	return context.AfterFunc(ctx, func() { qc.CloseWithError(0, "cancelled") })
}
