package net

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/scope"
)

// FuzzFrameDecoder feeds arbitrary bytes to the frame reader and every
// message decoder: none may panic, over-allocate past the frame limit, or
// accept a frame over it.
func FuzzFrameDecoder(f *testing.F) {
	seed := [][]byte{
		appendFrame(nil, msgHello, hello{Token: "tok", Base: node.XXH3.Sum([]byte("b")), Flags: flagPush}.encode()),
		appendFrame(nil, msgWelcome, welcome{ClientID: "c", Root: node.EmptyRoot(node.XXH3), Retained: true, RootNode: node.EmptyLeaf(node.XXH3)}.encode()),
		appendFrame(nil, msgHello, hello{Token: "tok", Base: node.BLAKE3.Sum([]byte("b")), Hash: node.BLAKE3}.encode()),
		appendFrame(nil, msgWelcome, welcome{ClientID: "c", Root: node.EmptyRoot(node.BLAKE3), RootNode: node.EmptyLeaf(node.BLAKE3), Hash: node.BLAKE3}.encode()),
		appendFrame(nil, msgError, errorMsg{Code: codeProtocol, Message: "x"}.encode()),
		appendFrame(nil, msgGetNodes, encodeNodeReqs(node.XXH3, []nodeReq{{Hash: node.EmptyRoot(node.XXH3)}, {Hash: node.EmptyRoot(node.XXH3), Hint: node.EmptyRoot(node.XXH3)}})),
		appendFrame(nil, msgGetBlobs, encodeHashes(node.XXH3, []node.Hash{node.EmptyRoot(node.XXH3)})),
		appendFrame(nil, msgNodeDelta, []byte{0, 2, deltaCopy, 0, 1, deltaLiteral, 1, 'k', 2, 0, 'v'}),
		appendFrame(nil, msgNode, node.EmptyLeaf(node.XXH3)),
		appendFrame(nil, msgPush, pushChange{Key: []byte("k"), HasFrom: true, Value: []byte("v")}.encode(node.XXH3, nil)),
		appendFrame(nil, msgPushDone, pushDone{Root: node.EmptyRoot(node.XXH3), Accepted: 1, Overridden: []uint64{0}}.encode(node.XXH3)),
		appendFrame(nil, msgGetChange, getChanges{}.encode(node.XXH3)),
		appendFrame(nil, msgChange, change{Key: []byte("k"), New: &node.Value{IsRef: true, Size: 5000}}.encode(nil)),
		appendFrame(nil, msgEnd, encodeEnd(3)),
		appendFrame(nil, msgWatch, encodeWatch(10*time.Second, scope.Scope{})),
		appendFrame(nil, msgWatch, encodeWatch(10*time.Second, scope.Prefixes([]byte("a/")))),
		appendFrame(nil, msgRoot, node.EmptyRoot(node.XXH3).Bytes()),
		{ProtocolVersion, msgGetNodes, 0xff, 0xff, 0xff, 0xff, 0x0f},
		{2, msgHello, 0},
	}
	for _, s := range seed {
		f.Add(s)
	}
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), max)
		for {
			fm, err := fr.ReadFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, ErrProtocol) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unclassified error: %v", err)
				}
				return
			}
			if len(fm.Payload) > max {
				t.Fatalf("frame of %d bytes passed a %d limit", len(fm.Payload), max)
			}
			p := fm.Payload
			switch fm.Type {
			case msgHello:
				if m, err := decodeHello(p); err == nil {
					roundTrip(t, p, m.encode())
				}
			case msgWelcome:
				if m, err := decodeWelcome(p); err == nil {
					roundTrip(t, p, m.encode())
				}
			case msgError:
				decodeError(p)
			case msgGetNodes:
				if rs, err := decodeNodeReqs(node.XXH3, p, maxRequestHashes); err == nil {
					roundTrip(t, p, encodeNodeReqs(node.XXH3, rs))
				}
			case msgGetBlobs:
				if hs, err := decodeHashes(fm.Type, node.XXH3, p, maxRequestHashes); err == nil {
					roundTrip(t, p, encodeHashes(node.XXH3, hs))
				}
			case msgNodeDelta:
				if raw, err := applyNodeDelta(p, fuzzHint); err == nil {
					node.Decode(raw)
				}
			case msgNode:
				node.Decode(p)
			case msgPush:
				decodePushChange(node.XXH3, p)
			case msgPushDone:
				decodePushDone(node.XXH3, p)
			case msgGetChange:
				if m, err := decodeGetChanges(node.XXH3, p); err == nil {
					roundTrip(t, p, m.encode(node.XXH3))
				}
			case msgChange:
				decodeChange(node.XXH3, p)
			case msgEnd:
				decodeEnd(p)
			case msgWatch:
				if hb, _, _, err := decodeWatch(p); err == nil && (hb < minHeartbeat || hb > maxHeartbeat) {
					t.Fatalf("heartbeat %v outside [%v, %v]", hb, minHeartbeat, maxHeartbeat)
				}
			case msgRoot:
				if h, err := decodeRoot(node.XXH3, p); err == nil && !bytes.Equal(node.XXH3.Append(nil, h), p) {
					t.Fatalf("root %x decoded from %x", h, p)
				}
			}
		}
	})
}

var fuzzHint, _ = node.Decode(node.Encode(node.XXH3, 0, []node.Entry{
	{Key: []byte("a"), Payload: node.InlineValue([]byte("1")).AppendPayload(nil)},
	{Key: []byte("b"), Payload: node.InlineValue([]byte("2")).AppendPayload(nil)},
}))

// roundTrip checks that re-encoding a decoded message whose encoding is
// canonical gives its bytes back (varints may be non-minimal in fuzzed
// input, so only equal lengths are compared strictly when they differ).
func roundTrip(t *testing.T, in, out []byte) {
	if len(out) > len(in) {
		t.Fatalf("re-encoding grew %d → %d bytes", len(in), len(out))
	}
}

// FuzzFrameReader checks that how the stream is cut into reads changes
// nothing: frames read whole from a buffer (each copied at once, since
// they alias the reader's buffer) equal frames read one byte at a time by
// an owning reader, whose payloads must stay intact until the end; both
// end with the same kind of error.
func FuzzFrameReader(f *testing.F) {
	f.Add(append(appendFrame(appendFrame(nil, msgNode, node.EmptyLeaf(node.XXH3)), msgEnd, encodeEnd(1)), ProtocolVersion))
	f.Add(appendFrame(appendFrame(nil, msgNode, bytes.Repeat([]byte{7}, 9000)), msgEnd, encodeEnd(1)))
	f.Add([]byte{ProtocolVersion, msgEnd, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 14
		type got struct {
			typ     byte
			payload []byte
		}
		read := func(fr *frameReader, copyNow bool) ([]got, error) {
			var out []got
			for {
				fm, err := fr.ReadFrame()
				if err != nil {
					return out, err
				}
				p := fm.Payload
				if copyNow {
					p = bytes.Clone(p)
				}
				out = append(out, got{fm.Type, p})
			}
		}
		whole, err1 := read(newFrameReader(bytes.NewReader(data), max), true)
		own := newFrameReader(iotest.OneByteReader(bytes.NewReader(data)), max)
		own.own = true
		bytewise, err2 := read(own, false)
		if len(whole) != len(bytewise) {
			t.Fatalf("%d frames read whole, %d byte by byte", len(whole), len(bytewise))
		}
		for i := range whole {
			if whole[i].typ != bytewise[i].typ || !bytes.Equal(whole[i].payload, bytewise[i].payload) {
				t.Fatalf("frame %d differs", i)
			}
		}
		same := func(target error) bool { return errors.Is(err1, target) == errors.Is(err2, target) }
		if !same(io.EOF) || !same(io.ErrUnexpectedEOF) || !same(ErrProtocol) || !same(ErrFrameTooLarge) {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
	})
}

// zeroReader returns nothing and no error, forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// TestFrameReaderNoProgress: a stream that returns nothing, again and
// again, ends the read with io.ErrNoProgress instead of spinning.
func TestFrameReaderNoProgress(t *testing.T) {
	if _, err := newFrameReader(zeroReader{}, 1<<10).ReadFrame(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("ReadFrame = %v, want io.ErrNoProgress", err)
	}
	// Cut short inside a frame, the same.
	r := io.MultiReader(bytes.NewReader([]byte{ProtocolVersion, msgNode, 10, 1, 2}), zeroReader{})
	if _, err := newFrameReader(r, 1<<10).ReadFrame(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("ReadFrame = %v, want io.ErrNoProgress", err)
	}
}
