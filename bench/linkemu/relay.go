package linkemu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// pipeDepth bounds the packets waiting for delivery in one direction; it is
// far above what a bounded queue plus propagation delay holds at the
// profiles' rates.
const pipeDepth = 1 << 15

type packet struct {
	at   time.Time
	data []byte
	to   *net.UDPAddr // UDP, server to client: the client's address
	via  *net.UDPConn // UDP, client to server: the client's upstream socket
}

// UDPRelay forwards datagrams between clients and one server through an
// emulated link. Each client address gets its own upstream socket; all
// clients share the link's two directions (one bottleneck).
type UDPRelay struct {
	up, down *Link
	lc       *net.UDPConn
	target   *net.UDPAddr

	mu      sync.Mutex
	peers   map[string]*net.UDPConn
	closed  bool
	upQ     chan packet
	downQ   chan packet
	wg      sync.WaitGroup
	dropped int64 // packets lost to a full delivery pipe (should stay 0)
}

// NewUDPRelay listens on 127.0.0.1 (a free port) and relays to target
// through p, with losses seeded by seed (the two directions use seed and
// seed+1).
func NewUDPRelay(p Profile, target *net.UDPAddr, seed uint64) (*UDPRelay, error) {
	lc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen: %w", err)
	}
	_ = lc.SetReadBuffer(4 << 20)
	_ = lc.SetWriteBuffer(4 << 20)
	r := &UDPRelay{
		up: NewLink(p, seed), down: NewLink(p, seed+1), lc: lc, target: target,
		peers: map[string]*net.UDPConn{},
		upQ:   make(chan packet, pipeDepth), downQ: make(chan packet, pipeDepth),
	}
	r.wg.Add(3)
	go r.readClients()
	go r.deliver(r.upQ, nil)
	go r.deliver(r.downQ, lc)
	return r, nil
}

// Addr returns the address clients dial instead of the server's.
func (r *UDPRelay) Addr() *net.UDPAddr { return r.lc.LocalAddr().(*net.UDPAddr) }

// Stats returns what each direction carried: up is client to server.
func (r *UDPRelay) Stats() (up, down LinkStats) { return r.up.Stats(), r.down.Stats() }

// Close stops the relay and waits for its goroutines.
func (r *UDPRelay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	err := r.lc.Close()
	for _, c := range r.peers {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

func (r *UDPRelay) enqueue(q chan packet, p packet) {
	select {
	case q <- p:
	default:
		r.mu.Lock()
		r.dropped++
		r.mu.Unlock()
	}
}

func (r *UDPRelay) readClients() {
	defer r.wg.Done()
	var readers sync.WaitGroup
	defer func() {
		close(r.upQ)
		readers.Wait()
		close(r.downQ)
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.lc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		now := time.Now()
		key := from.String()
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		uc := r.peers[key]
		if uc == nil {
			uc, err = net.DialUDP("udp", nil, r.target)
			if err != nil {
				r.mu.Unlock()
				continue
			}
			_ = uc.SetReadBuffer(4 << 20)
			_ = uc.SetWriteBuffer(4 << 20)
			r.peers[key] = uc
			readers.Add(1)
			go func(uc *net.UDPConn, client *net.UDPAddr) {
				defer readers.Done()
				r.readServer(uc, client)
			}(uc, from)
		}
		r.mu.Unlock()
		if at, ok := r.up.Admit(now, n); ok {
			r.enqueue(r.upQ, packet{at: at, data: append([]byte(nil), buf[:n]...), via: uc})
		}
	}
}

func (r *UDPRelay) readServer(uc *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 64<<10)
	for {
		n, err := uc.Read(buf)
		if err != nil {
			return
		}
		if at, ok := r.down.Admit(time.Now(), n); ok {
			r.enqueue(r.downQ, packet{at: at, data: append([]byte(nil), buf[:n]...), to: client})
		}
	}
}

// deliver writes each packet of q at its delivery time: through out to the
// packet's client, or (out nil) through the client's upstream socket.
func (r *UDPRelay) deliver(q chan packet, out *net.UDPConn) {
	defer r.wg.Done()
	for p := range q {
		if d := time.Until(p.at); d > 0 {
			time.Sleep(d)
		}
		if out != nil {
			_, _ = out.WriteToUDP(p.data, p.to)
			continue
		}
		_, _ = p.via.Write(p.data)
	}
}

// TCPRelay forwards TCP connections to one server through an emulated link
// (see the package doc for how a stream models loss). The relay accepts on
// loopback at once; the handshake's round trip is charged by holding every
// connection's first bytes back one RTT.
type TCPRelay struct {
	p      Profile
	ln     net.Listener
	target string
	seed   uint64

	mu     sync.Mutex
	links  []*Link // up, down of every connection so far
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

// segment is the largest chunk the TCP relay reads and schedules at once,
// like one TCP segment.
const segment = 1448

// NewTCPRelay listens on 127.0.0.1 (a free port) and relays each accepted
// connection to target through p. Every connection gets its own two links
// (a connection's stream owns the bottleneck), seeded from seed.
func NewTCPRelay(p Profile, target string, seed uint64) (*TCPRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen: %w", err)
	}
	r := &TCPRelay{p: p, ln: ln, target: target, seed: seed}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr returns the address clients dial instead of the server's.
func (r *TCPRelay) Addr() string { return r.ln.Addr().String() }

// Stats sums what every connection carried in each direction.
func (r *TCPRelay) Stats() (up, down LinkStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range r.links {
		s := l.Stats()
		t := &up
		if i%2 == 1 {
			t = &down
		}
		t.Packets += s.Packets
		t.Bytes += s.Bytes
		t.Lost += s.Lost
		t.Overflow += s.Overflow
	}
	return up, down
}

// Close stops accepting, closes every relayed connection and waits.
func (r *TCPRelay) Close() error {
	r.mu.Lock()
	r.closed = true
	err := r.ln.Close()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

func (r *TCPRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		seed := r.seed + uint64(len(r.links))
		up, down := NewLink(r.p, seed), NewLink(r.p, seed+1)
		r.links = append(r.links, up, down)
		r.conns = append(r.conns, c, s)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(c, s, up, r.p.RTT)
		go r.pump(s, c, down, r.p.RTT)
	}
}

// pump copies src to dst through link l, then half-closes dst. Nothing
// moves before handshake has passed: the relay accepts a connection at
// once on loopback, so it charges TCP's handshake round trip here.
func (r *TCPRelay) pump(src, dst net.Conn, l *Link, handshake time.Duration) {
	defer r.wg.Done()
	time.Sleep(handshake)
	q := make(chan packet, pipeDepth)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var werr error
		for p := range q {
			if werr != nil {
				continue
			}
			if d := time.Until(p.at); d > 0 {
				time.Sleep(d)
			}
			_, werr = dst.Write(p.data)
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && werr == nil {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}()
	buf := make([]byte, segment)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Hold the sender back while the bottleneck queue is full, as a
			// closed TCP window would.
			for i := 0; i < 10000; i++ {
				b := l.Backlog(time.Now())
				if b <= l.QueueLimit() {
					break
				}
				time.Sleep(b - l.QueueLimit())
			}
			at := l.AdmitStream(time.Now(), n)
			q <- packet{at: at, data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// A reset or close: end the other direction too.
				defer dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}
