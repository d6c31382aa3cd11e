package linkemu

import (
	"bytes"
	"io"
	"math"
	"net"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// A link that loses 2% of packets loses close to 2% of many packets, and
// the same seed loses the same packets.
func TestLossRateAndDeterminism(t *testing.T) {
	p := Profile{Loss: 0.02}
	const n = 100_000
	run := func(seed uint64) []bool {
		l := NewLink(p, seed)
		out := make([]bool, n)
		for i := range out {
			_, ok := l.Admit(t0.Add(time.Duration(i)*time.Millisecond), 1200)
			out[i] = ok
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	lost := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("packet %d: same seed, different fate", i)
		}
		if !a[i] {
			lost++
		}
	}
	if rate := float64(lost) / n; math.Abs(rate-0.02) > 0.002 {
		t.Fatalf("loss rate %.4f, want 0.02 ± 0.002", rate)
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("different seeds lost the same packets")
	}
}

// Delivery never comes before arrival + RTT/2 + transmission time, packets
// stay in order, and back-to-back packets are spaced by their transmission
// time at the link's bandwidth.
func TestDelayOrderAndBandwidth(t *testing.T) {
	p := Profile{RTT: 50 * time.Millisecond, Bandwidth: 8e6, Queue: time.Second} // 1 byte per µs
	l := NewLink(p, 1)
	var prev time.Time
	for i := range 100 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond) // arrivals faster than the link
		at, ok := l.Admit(now, 1000)
		if !ok {
			t.Fatalf("packet %d dropped", i)
		}
		if min := now.Add(25*time.Millisecond + time.Millisecond); at.Before(min) {
			t.Fatalf("packet %d delivered at +%v, before arrival + RTT/2 + tx (+%v)", i, at.Sub(t0), min.Sub(t0))
		}
		if i > 0 && at.Sub(prev) != time.Millisecond {
			t.Fatalf("packet %d delivered %v after the previous, want the 1 ms transmission time", i, at.Sub(prev))
		}
		prev = at
	}
}

// A full queue drops datagrams (tail drop) and counts them as overflow.
func TestQueueOverflow(t *testing.T) {
	p := Profile{Bandwidth: 8e6, Queue: 10 * time.Millisecond} // 1000-byte packet = 1 ms
	l := NewLink(p, 1)
	ok := 0
	for range 50 {
		if _, admitted := l.Admit(t0, 1000); admitted {
			ok++
		}
	}
	// Packets that would wait up to 10 ms are admitted: 11 of them.
	if ok != 11 {
		t.Fatalf("%d packets admitted at once, want 11", ok)
	}
	if s := l.Stats(); s.Overflow != 39 || s.Packets != 50 {
		t.Fatalf("stats %+v, want 39 overflows of 50", s)
	}
}

// A stream never loses a segment; a lost one arrives a round trip late
// and holds back those behind it.
func TestStreamLossDelays(t *testing.T) {
	p := Profile{RTT: 20 * time.Millisecond, Loss: 0.5}
	l := NewLink(p, 3)
	var prev time.Time
	late := 0
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		at := l.AdmitStream(now, 1000)
		if at.Before(now.Add(10 * time.Millisecond)) {
			t.Fatalf("segment %d delivered before the one-way delay", i)
		}
		if at.Before(prev) {
			t.Fatalf("segment %d delivered out of order", i)
		}
		if at.Sub(now) >= 30*time.Millisecond {
			late++
		}
		prev = at
	}
	if s := l.Stats(); s.Lost == 0 || late < int(s.Lost) {
		t.Fatalf("%d late segments for %d losses", late, s.Lost)
	}
}

// Datagrams through a UDP relay arrive intact, in order, no sooner than
// the one-way delay after they were sent.
func TestUDPRelay(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := NewUDPRelay(Profile{RTT: 20 * time.Millisecond}, srv.LocalAddr().(*net.UDPAddr), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cl, err := net.DialUDP("udp", nil, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 20
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		if _, err := cl.Write([]byte{byte(i), 'x'}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 100)
	var from *net.UDPAddr
	for i := range n {
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, addr, err := srv.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if m != 2 || buf[0] != byte(i) {
			t.Fatalf("datagram %d: got % x, out of order or damaged", i, buf[:m])
		}
		if d := time.Since(sent[i]); d < 10*time.Millisecond {
			t.Fatalf("datagram %d arrived after %v, before the 10 ms one-way delay", i, d)
		}
		from = addr
	}
	// And the reply comes back through the relay to the client.
	start := time.Now()
	if _, err := srv.WriteToUDP([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := cl.Read(buf)
	if err != nil || string(buf[:m]) != "pong" {
		t.Fatalf("reply: %q, %v", buf[:m], err)
	}
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Fatalf("reply after %v, before the one-way delay", d)
	}
	up, down := r.Stats()
	if up.Packets != n || down.Packets != 1 {
		t.Fatalf("stats up %+v down %+v", up, down)
	}
}

// A byte stream through a lossy TCP relay arrives whole and in order, in
// both directions, and the relay counts its bytes.
func TestTCPRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo until the client half-closes
	}()
	r, err := NewTCPRelay(Profile{RTT: 4 * time.Millisecond, Bandwidth: 200e6, Loss: 0.05}, ln.Addr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	start := time.Now()
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes came back as %d different bytes", len(msg), len(got))
	}
	if d := time.Since(start); d < 4*time.Millisecond {
		t.Fatalf("round trip in %v, under the 4 ms RTT", d)
	}
	up, down := r.Stats()
	if up.Bytes != int64(len(msg)) || down.Bytes != int64(len(msg)) {
		t.Fatalf("relay counted %d up, %d down, want %d each", up.Bytes, down.Bytes, len(msg))
	}
	if up.Lost == 0 {
		t.Fatal("no segment was lost at 5% loss")
	}
}
