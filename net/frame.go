package net

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/arbor-sync/arbor/node"
)

// ProtocolVersion is byte 0 of every frame. A peer that receives another
// version answers with an error frame and closes the connection.
const ProtocolVersion = 2

// ALPN is the TLS application protocol Arbor negotiates. Both sides also
// offer the previous one, ALPNv1, only to recognise a peer that speaks it
// and end the connection with an "upgrade" error (ErrVersion) naming the
// side to upgrade.
const ALPN = "arbor/2"

// ALPNv1 is the protocol of Arbor before capabilities were negotiated.
const ALPNv1 = "arbor/1"

// DefaultMaxFrame is the default hard limit on a frame's payload.
const DefaultMaxFrame = 16 << 20

// maxHeader is the longest frame header: version, type, 10-byte uvarint.
const maxHeader = 2 + binary.MaxVarintLen64

// Message types. See PROTOCOL.md for every message's payload.
const (
	msgHello     byte = 0x01 // client → server, first frame of the first stream
	msgWelcome   byte = 0x02 // server → client, answer to Hello
	msgError     byte = 0x03 // either way: the exchange or session failed
	msgGetNodes  byte = 0x10 // client → server: hashes to fetch
	msgNode      byte = 0x11 // server → client: one encoded node
	msgGetBlobs  byte = 0x12 // client → server: value blob hashes to fetch
	msgBlob      byte = 0x13 // server → client: one value blob
	msgNodeDelta byte = 0x14 // server → client: one node as a delta against a hint node
	msgGetTree   byte = 0x15 // client → server: roots of subtrees to stream whole
	msgPush      byte = 0x20 // client → server: one local change
	msgPushDone  byte = 0x21 // server → client: push outcome
	msgGetChange byte = 0x30 // client → server: changes between two roots
	msgChange    byte = 0x31 // server → client: one changed record
	msgWatch     byte = 0x40 // client → server: report root changes
	msgRoot      byte = 0x41 // server → client: the server's current root
	msgEnd       byte = 0x7F // either way: end of a message sequence, with a count
)

func msgName(t byte) string {
	switch t {
	case msgHello:
		return "Hello"
	case msgWelcome:
		return "Welcome"
	case msgError:
		return "Error"
	case msgGetNodes:
		return "GetNodes"
	case msgNode:
		return "Node"
	case msgGetBlobs:
		return "GetBlobs"
	case msgBlob:
		return "Blob"
	case msgNodeDelta:
		return "NodeDelta"
	case msgGetTree:
		return "GetTree"
	case msgPush:
		return "Push"
	case msgPushDone:
		return "PushDone"
	case msgGetChange:
		return "GetChanges"
	case msgChange:
		return "Change"
	case msgWatch:
		return "Watch"
	case msgRoot:
		return "Root"
	case msgEnd:
		return "End"
	}
	return fmt.Sprintf("unknown(0x%02x)", t)
}

func knownType(t byte) bool { return msgName(t)[0] != 'u' }

// frame is one decoded frame. Payload aliases the reader's buffer and is
// valid until the next ReadFrame, unless the reader owns none (own).
type frame struct {
	Type    byte
	Payload []byte
}

// frameReader reads frames from a byte stream, rejecting oversized ones
// before allocating. It reads the stream in large pieces into a buffer and
// returns payloads that alias it, so a frame's bytes are copied once, from
// the stream into the buffer.
type frameReader struct {
	r     io.Reader
	max   int
	buf   []byte // buf[start:end] is read but not yet returned
	start int
	end   int
	err   error // the stream's error, once it returned one
	// own gives every frame bytes of its own that the caller may keep:
	// the reader then never reuses a buffer, but starts a new one when a
	// frame does not fit in the rest of the current one.
	own bool
	// mem, if set, is charged for the buffer (charged bytes of it).
	mem     *memBudget
	charged int64
}

// frameReadSize is the size a frameReader's buffer grows to: how much it
// asks the stream for at a time in a long exchange.
const frameReadSize = 256 << 10

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: r, max: max}
}

// fill makes at least n bytes available in buf[start:end], which it may
// move to a new buffer (own) or to the front of this one. It returns the
// stream's error if the stream ends first.
func (fr *frameReader) fill(n int) error {
	for empty := 0; fr.end-fr.start < n; {
		if fr.err != nil {
			return fr.err
		}
		if fr.end == len(fr.buf) {
			if err := fr.grow(n); err != nil {
				return err
			}
		}
		k, err := fr.r.Read(fr.buf[fr.end:])
		fr.end += k
		if err != nil {
			fr.err = err
		}
		if k > 0 {
			empty = 0
		} else if empty++; empty >= 100 && fr.err == nil {
			fr.err = io.ErrNoProgress // a reader that returns nothing, again and again
		}
	}
	return nil
}

// grow makes room after buf[end] on the way to holding n bytes. A buffer
// grows from 4 KiB, so that the many short exchanges stay small, to
// frameReadSize for long ones, and past that to at most twice the bytes it
// holds: a frame's declared length is allocated as its bytes arrive, never
// on the word of its header. New buffers are charged to the reader's
// memory budget, if it has one.
func (fr *frameReader) grow(n int) error {
	held := fr.end - fr.start
	size := max(min(n, max(2*held, frameReadSize)), min(2*len(fr.buf), frameReadSize), 4<<10)
	var nb []byte
	if !fr.own && len(fr.buf) >= size && fr.start > 0 {
		nb = fr.buf
	} else {
		if err := fr.mem.take(int64(size)); err != nil {
			fr.err = err
			return err
		}
		fr.mem.give(fr.charged)
		fr.charged = int64(size)
		nb = make([]byte, size)
	}
	fr.end = copy(nb, fr.buf[fr.start:fr.end])
	fr.buf, fr.start = nb, 0
	return nil
}

// release returns the reader's buffer to its memory budget; the reader
// must not be used after.
func (fr *frameReader) release() {
	fr.mem.give(fr.charged)
	fr.charged = 0
	fr.buf, fr.start, fr.end = nil, 0, 0
}

// ReadFrame reads the next frame. It returns io.EOF only at a clean frame
// boundary; a frame cut short gives io.ErrUnexpectedEOF. Malformed headers
// wrap ErrProtocol and oversized frames ErrFrameTooLarge.
func (fr *frameReader) ReadFrame() (frame, error) {
	if err := fr.fill(1); err != nil {
		return frame{}, err // io.EOF here is a clean end
	}
	// Read no further than the header needs: the peer may be waiting for
	// an answer to this frame before it sends more.
	if err := fr.fill(2); err != nil {
		return frame{}, eof(err)
	}
	ver, typ := fr.buf[fr.start], fr.buf[fr.start+1]
	if ver != ProtocolVersion {
		return frame{}, fmt.Errorf("%w: frame version %d, this arbor speaks %d", ErrProtocol, ver, ProtocolVersion)
	}
	if !knownType(typ) {
		return frame{}, fmt.Errorf("%w: unknown message type 0x%02x", ErrProtocol, typ)
	}
	var n uint64
	var w int
	for have := 3; ; have++ {
		if err := fr.fill(have); err != nil {
			return frame{}, eof(err)
		}
		if n, w = binary.Uvarint(fr.buf[fr.start+2 : fr.start+have]); w != 0 {
			break
		}
		if have == maxHeader {
			w = -1 // unreachable: ten bytes end or overflow a uvarint
			break
		}
	}
	if w < 0 {
		return frame{}, fmt.Errorf("%w: %s frame: bad length", ErrProtocol, msgName(typ))
	}
	if n > uint64(fr.max) {
		return frame{}, fmt.Errorf("%w: %s frame of %d bytes (limit %d)", ErrFrameTooLarge, msgName(typ), n, fr.max)
	}
	hl := 2 + w
	if err := fr.fill(hl + int(n)); err != nil {
		return frame{}, eof(err)
	}
	p0 := fr.start + hl
	p1 := p0 + int(n)
	fr.start = p1
	return frame{Type: typ, Payload: fr.buf[p0:p1:p1]}, nil
}

func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendFrame appends a frame to dst.
func appendFrame(dst []byte, typ byte, payload []byte) []byte {
	dst = append(dst, ProtocolVersion, typ)
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// frameWriter buffers frames onto a stream.
type frameWriter struct {
	w   *bufio.Writer
	max int
	hdr [maxHeader]byte
}

func newFrameWriter(w io.Writer, max int) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, exchangeWriteBuffer), max: max}
}

// WriteFrame buffers one frame. Call Flush to send.
func (fw *frameWriter) WriteFrame(typ byte, payload []byte) error {
	if len(payload) > fw.max {
		return fmt.Errorf("%w: %s frame of %d bytes (limit %d)", ErrFrameTooLarge, msgName(typ), len(payload), fw.max)
	}
	h := append(fw.hdr[:0], ProtocolVersion, typ)
	h = binary.AppendUvarint(h, uint64(len(payload)))
	if _, err := fw.w.Write(h); err != nil {
		return err
	}
	_, err := fw.w.Write(payload)
	return err
}

func (fw *frameWriter) Flush() error { return fw.w.Flush() }

// dec reads the fields of a payload. The first error sticks; every getter
// returns a zero value after it, so decoders check once at the end.
type dec struct {
	b   []byte
	err error
	msg string
	alg node.Alg // the width of a hash field
}

// newDec reads a payload of message msg whose hashes are of alg.
func newDec(msg byte, alg node.Alg, b []byte) *dec {
	return &dec{b: b, msg: msgName(msg), alg: alg}
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s message: bad %s", ErrProtocol, d.msg, what)
	}
}

func (d *dec) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// hash reads a hash of the payload's algorithm (all zeros: the zero Hash).
func (d *dec) hash(what string) node.Hash {
	if d.err != nil {
		return node.Hash{}
	}
	n := d.alg.Size()
	if n == 0 || len(d.b) < n {
		d.fail(what)
		return node.Hash{}
	}
	h, _ := d.alg.HashOf(d.b[:n])
	d.b = d.b[n:]
	return h
}

// bytes reads a uvarint length and that many bytes (aliasing the payload).
func (d *dec) bytes(what string, max int) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) || n > uint64(max) {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// rest returns the remaining bytes.
func (d *dec) rest() []byte {
	v := d.b
	d.b = nil
	return v
}

// done reports the first error, or trailing bytes.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %s message: %d trailing bytes", ErrProtocol, d.msg, len(d.b))
	}
	return d.err
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}
