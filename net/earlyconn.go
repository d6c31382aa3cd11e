package net

import (
	"context"
	"crypto/tls"
	stdnet "net"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
)

// A 0-RTT dial and quic-go's data race.
//
// quic-go (v0.65, its issue 4303) reads the peer's transport parameters
// when a stream is opened and writes them, without a lock, when the
// server's handshake answer arrives. On a 0-RTT connection the Hello's
// stream is opened while that answer may already be coming in, so the two
// can run at once. earlyDial closes the window: the client's socket
// delivers nothing until the Hello's stream is open (gatedUDPConn), so
// the write always follows the read (and the race detector sees why).

// earlyConn is a 0-RTT QUIC connection on its own socket.
type earlyConn struct {
	qc   *quic.Conn
	tr   *quic.Transport
	gate *readGate
}

// earlyDial dials addr on a fresh socket whose reads wait for
// gate.open; the caller opens it once its first stream is open. If the
// dial has not returned within gateFallback (no 0-RTT after all: the
// handshake must complete first, which needs reads), the gate opens by
// itself.
func earlyDial(ctx context.Context, addr string, tconf *tls.Config, qconf *quic.Config) (*earlyConn, error) {
	raddr, err := stdnet.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := stdnet.ListenUDP("udp", &stdnet.UDPAddr{IP: stdnet.IPv4zero})
	if err != nil {
		return nil, err
	}
	gate := &readGate{ch: make(chan struct{})}
	tr := &quic.Transport{Conn: &gatedUDPConn{UDPConn: udp, gate: gate, batch: ipv4.NewPacketConn(udp)}}
	fallback := time.AfterFunc(gateFallback, gate.open)
	qc, err := tr.DialEarly(ctx, raddr, tconf, qconf)
	fallback.Stop()
	if err != nil {
		gate.open()
		tr.Close()
		udp.Close()
		return nil, err
	}
	return &earlyConn{qc: qc, tr: tr, gate: gate}, nil
}

// gateFallback bounds how long an early dial keeps its socket's reads
// shut while it has not returned.
const gateFallback = 200 * time.Millisecond

func (e *earlyConn) close() {
	e.gate.open()
	e.tr.Close()
	e.tr.Conn.Close()
}

// readGate is a one-way door: closed, then open for good.
type readGate struct {
	once sync.Once
	ch   chan struct{}
}

func (g *readGate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *readGate) wait() { <-g.ch }

// gatedUDPConn is a UDP socket whose reads wait for its gate. It keeps
// every interface quic-go uses on a *net.UDPConn (batched reads, ECN), so
// the connection loses no optimisation.
type gatedUDPConn struct {
	*stdnet.UDPConn
	gate  *readGate
	batch *ipv4.PacketConn
}

func (c *gatedUDPConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	c.gate.wait()
	return c.batch.ReadBatch(ms, flags)
}

func (c *gatedUDPConn) ReadFrom(b []byte) (int, stdnet.Addr, error) {
	c.gate.wait()
	return c.UDPConn.ReadFrom(b)
}

func (c *gatedUDPConn) ReadMsgUDP(b, oob []byte) (int, int, int, *stdnet.UDPAddr, error) {
	c.gate.wait()
	return c.UDPConn.ReadMsgUDP(b, oob)
}

// SyscallConn is the socket's, with reads through it gated too.
func (c *gatedUDPConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.UDPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return gatedRawConn{RawConn: rc, gate: c.gate}, nil
}

type gatedRawConn struct {
	syscall.RawConn
	gate *readGate
}

func (r gatedRawConn) Read(f func(fd uintptr) bool) error {
	r.gate.wait()
	return r.RawConn.Read(f)
}

var _ quic.OOBCapablePacketConn = (*gatedUDPConn)(nil)
