// Package linkemu emulates a network link in user space, for benchmarks on
// machines without kernel netem: a relay on 127.0.0.1 sits between a client
// and a server and adds one-way delay, caps bandwidth with a bottleneck
// queue, and drops a share of packets from a seeded random source.
//
// The model of one direction is Link, a pure function of arrival times and
// sizes, so its behaviour is tested without a clock. UDPRelay carries
// datagrams (QUIC) through two Links, one per direction, and really drops
// packets: the transport's own loss recovery and congestion control react.
// TCPRelay carries byte streams (the full-copy and rsync baselines); it
// cannot drop bytes from a stream it terminates, so a "lost" segment is
// delivered one extra round trip late, as a fast retransmit would deliver
// it, holding back the segments behind it. It does not shrink a congestion
// window, and TCP's slow start is not modelled either (the relay reads as
// fast as its queue allows): both favour the TCP baselines. (Real TCP Reno
// at 2% loss and 50 ms RTT reaches about 2 Mbit/s by the Mathis formula,
// whatever the link's bandwidth; this model gives nearly the full rate.)
package linkemu

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Profile describes an emulated link. The zero Profile adds nothing.
type Profile struct {
	// Name names the profile in reports.
	Name string
	// RTT is the round-trip delay the link adds: RTT/2 each way.
	RTT time.Duration
	// Bandwidth caps each direction, in bits per second; 0 is unlimited.
	Bandwidth float64
	// Loss is the probability that a packet is lost, in [0, 1).
	Loss float64
	// Queue bounds the bottleneck queue as a queuing delay: a packet that
	// would wait longer is dropped (UDP) or held back at the sender (TCP).
	// Zero means one RTT, at least 5 ms (one bandwidth-delay product).
	Queue time.Duration
}

// The standard profiles.
var (
	// LAN is a 1 Gbit/s link with a 1 ms round trip.
	LAN = Profile{Name: "lan", RTT: time.Millisecond, Bandwidth: 1e9}
	// WAN is a 100 Mbit/s link with a 50 ms round trip.
	WAN = Profile{Name: "wan", RTT: 50 * time.Millisecond, Bandwidth: 100e6}
	// Lossy is a 20 Mbit/s link with a 50 ms round trip that loses 2% of
	// packets.
	Lossy = Profile{Name: "lossy", RTT: 50 * time.Millisecond, Bandwidth: 20e6, Loss: 0.02}
)

func (p Profile) queue() time.Duration {
	if p.Queue > 0 {
		return p.Queue
	}
	return max(p.RTT, 5*time.Millisecond)
}

// LinkStats counts what one direction of a link carried.
type LinkStats struct {
	// Packets and Bytes count what entered the link, dropped or not.
	Packets, Bytes int64
	// Lost counts packets lost at random (for a stream: retransmitted).
	Lost int64
	// Overflow counts datagrams dropped because the queue was full.
	Overflow int64
}

// Link models one direction of a link: a bottleneck that serialises
// packets at the profile's bandwidth behind a bounded queue, then a
// propagation delay of RTT/2. It is safe for concurrent use.
type Link struct {
	p  Profile
	mu sync.Mutex
	// rng decides losses. It is drawn exactly once per packet, so the loss
	// pattern depends only on the seed and the packet count.
	rng  *rand.Rand
	busy time.Time // when the bottleneck finishes the last accepted packet
	last time.Time // the latest delivery time handed out
	st   LinkStats
}

// NewLink returns the model of one direction of p, with losses drawn from seed.
func NewLink(p Profile, seed uint64) *Link {
	return &Link{p: p, rng: rand.New(rand.NewPCG(seed, 0x11e7e1))}
}

// Profile returns the link's profile.
func (l *Link) Profile() Profile { return l.p }

// Stats returns what the link has carried so far.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

func (l *Link) txTime(size int) time.Duration {
	if l.p.Bandwidth <= 0 {
		return 0
	}
	return time.Duration(float64(size) * 8 / l.p.Bandwidth * float64(time.Second))
}

// Admit models a datagram of size bytes that reaches the link at now. It
// returns when the datagram arrives at the far end, or ok false if the link
// drops it (at random, or because the queue is full). Delivery times never
// decrease, so datagrams stay in order.
func (l *Link) Admit(now time.Time, size int) (deliverAt time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Packets++
	l.st.Bytes += int64(size)
	lost := l.p.Loss > 0 && l.rng.Float64() < l.p.Loss
	start := now
	if l.busy.After(start) {
		start = l.busy
	}
	if start.Sub(now) > l.p.queue() {
		l.st.Overflow++
		return time.Time{}, false
	}
	l.busy = start.Add(l.txTime(size))
	if lost {
		l.st.Lost++
		return time.Time{}, false
	}
	return l.deliver(l.busy.Add(l.p.RTT / 2)), true
}

// Backlog returns how long a packet reaching the link at now would wait in
// the queue before its transmission starts.
func (l *Link) Backlog(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.busy.Sub(now), 0)
}

// QueueLimit returns the longest a packet may wait in the queue.
func (l *Link) QueueLimit() time.Duration { return l.p.queue() }

// AdmitStream models a segment of a reliable byte stream: it is never
// dropped. A segment lost at random is sent again (taking the bottleneck a
// second time) and arrives one round trip later than it would have, as a
// fast retransmit delivers it; the segments behind it wait for it, since a
// stream is delivered in order (delivery times never decrease). New
// segments keep flowing meanwhile: the congestion window is not shrunk.
// Callers keep the queue bounded by waiting while Backlog exceeds
// QueueLimit.
func (l *Link) AdmitStream(now time.Time, size int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Packets++
	l.st.Bytes += int64(size)
	start := now
	if l.busy.After(start) {
		start = l.busy
	}
	l.busy = start.Add(l.txTime(size))
	at := l.busy.Add(l.p.RTT / 2)
	if l.p.Loss > 0 && l.rng.Float64() < l.p.Loss {
		l.st.Lost++
		l.busy = l.busy.Add(l.txTime(size))
		at = at.Add(l.p.RTT)
	}
	return l.deliver(at)
}

func (l *Link) deliver(at time.Time) time.Time {
	if at.Before(l.last) {
		at = l.last
	}
	l.last = at
	return at
}
