package net

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbor-sync/arbor/chunker"
	"github.com/arbor-sync/arbor/node"
	"github.com/arbor-sync/arbor/tree"
	"github.com/quic-go/quic-go"
)

// rawConn dials the test server with the pinned certificate and no Arbor
// logic: the tests speak the protocol (or not) by hand.
func rawConn(t *testing.T, ts *testServer, qconf *quic.Config) *quic.Conn {
	t.Helper()
	conf, err := clientTLS("127.0.0.1", ts.fp, "", false)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := quic.DialAddr(context.Background(), ts.addr, conf, qconf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// rawHello performs a valid Hello and returns the Welcome.
func rawHello(t *testing.T, qc *quic.Conn, h hello) welcome {
	t.Helper()
	st, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Write(appendFrame(nil, msgHello, h.encode()))
	st.Close()
	fr := newFrameReader(st, DefaultMaxFrame)
	f, err := fr.ReadFrame()
	if err != nil || f.Type != msgWelcome {
		t.Fatalf("welcome: %v %v", f.Type, err)
	}
	w, err := decodeWelcome(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// waitClosed waits for the server to close qc and returns the close error.
func waitClosed(t *testing.T, qc *quic.Conn) error {
	t.Helper()
	select {
	case <-qc.Context().Done():
		return context.Cause(qc.Context())
	case <-time.After(20 * time.Second):
		t.Fatal("server did not close the connection")
		return nil
	}
}

func closeCode(err error) (uint64, bool) {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return uint64(ae.ErrorCode), true
	}
	return 0, false
}

// TestHostileClients: each misbehaving client gets a clear error or a
// timeout, its connection closes, and the server keeps serving others.
func TestHostileClients(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) {
		o.HandshakeTimeout = 300 * time.Millisecond
		o.IOTimeout = 300 * time.Millisecond
		o.IdleTimeout = time.Second
		o.MaxFrame = 1 << 20
	})
	put(t, ts.store, 0, 200, 1)
	good := hello{Token: alice, Config: smallChunks}

	tests := []struct {
		name string
		run  func(t *testing.T, qc *quic.Conn)
		code uint64 // expected close code; 0: any
	}{
		{"opens nothing", func(t *testing.T, qc *quic.Conn) {}, 0},
		{"opens a stream and sends nothing", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(nil)
		}, 0},
		{"garbage hello", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			st.Close()
		}, codeProtocol},
		{"wrong version", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte{9, msgHello, 0})
			st.Close()
		}, codeProtocol},
		{"malformed hello payload", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgHello, []byte{200, 1, 2}))
			st.Close()
		}, codeProtocol},
		{"truncated hello", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			f := appendFrame(nil, msgHello, good.encode())
			st.Write(f[:len(f)-3])
			st.Close()
		}, 0},
		{"unknown token", func(t *testing.T, qc *quic.Conn) {
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgHello, hello{Token: "who?", Config: smallChunks}.encode()))
			st.Close()
		}, codeUnauthorized},
		{"unknown message type", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte{ProtocolVersion, 0x55, 0})
			st.Close()
		}, codeProtocol},
		{"oversized frame", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte{ProtocolVersion, msgGetNodes, 0xff, 0xff, 0xff, 0xff, 0x0f})
			st.Close()
		}, codeTooLarge},
		{"truncated frame", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte{ProtocolVersion, msgGetNodes, 100, 1, 2, 3})
			st.Close()
		}, codeProtocol},
		{"frame cut and stalled", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write([]byte{ProtocolVersion, msgGetNodes, 100, 1, 2, 3})
		}, 0},
		{"node never shown", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetNodes, encodeNodeReqs(node.XXH3, []nodeReq{{Hash: node.XXH3.Sum([]byte("secret"))}})))
			st.Close()
		}, codeForbidden},
		{"subtree never shown", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetTree, encodeHashes(node.XXH3, []node.Hash{node.XXH3.Sum([]byte("secret"))})))
			st.Close()
		}, codeForbidden},
		{"subtree request malformed", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetTree, []byte{3, 1, 2}))
			st.Close()
		}, codeProtocol},
		{"blob never shown", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetBlobs, encodeHashes(node.XXH3, []node.Hash{node.XXH3.Sum([]byte("secret"))})))
			st.Close()
		}, codeForbidden},
		{"changes from an unretained root", func(t *testing.T, qc *quic.Conn) {
			w := rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetChange, getChanges{From: node.XXH3.Sum([]byte("x")), To: w.Root}.encode(node.XXH3)))
			st.Close()
		}, codeForbidden},
		{"hash count lies", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgGetNodes, []byte{50, 1, 2, 3}))
			st.Close()
		}, codeProtocol},
		{"push keys out of order", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			b := appendFrame(nil, msgPush, pushChange{Key: []byte("b"), Value: []byte("1")}.encode(node.XXH3, nil))
			b = appendFrame(b, msgPush, pushChange{Key: []byte("a"), Value: []byte("1")}.encode(node.XXH3, nil))
			b = appendFrame(b, msgEnd, encodeEnd(2))
			st.Write(b)
			st.Close()
		}, codeProtocol},
		{"push count lies", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			b := appendFrame(nil, msgPush, pushChange{Key: []byte("a"), Value: []byte("1")}.encode(node.XXH3, nil))
			b = appendFrame(b, msgEnd, encodeEnd(7))
			st.Write(b)
			st.Close()
		}, codeProtocol},
		{"server frame sent by client", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgNode, node.EmptyLeaf(node.XXH3)))
			st.Close()
		}, codeProtocol},
		{"second hello", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
			st, _ := qc.OpenStreamSync(context.Background())
			st.Write(appendFrame(nil, msgHello, good.encode()))
			st.Close()
		}, codeProtocol},
		{"idle after hello", func(t *testing.T, qc *quic.Conn) {
			rawHello(t, qc, good)
		}, codeLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qc := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
			tt.run(t, qc)
			err := waitClosed(t, qc)
			code, remote := closeCode(err)
			if tt.code != 0 && (!remote || code != tt.code) {
				t.Fatalf("closed with %v (code %d remote %v), want code %d", err, code, remote, tt.code)
			}
			// The server still serves a well-behaved client.
			if _, err := Root(context.Background(), ts.opts(bob)); err != nil {
				t.Fatalf("server stopped serving: %v", err)
			}
		})
	}
}

// TestClientNeverReads: a client that requests a large response and never
// reads it is cut off by the server's write deadline.
func TestClientNeverReads(t *testing.T) {
	ts := startServer(t, chunker.Config{}, func(o *ServerOptions) { o.IOTimeout = 300 * time.Millisecond })
	var edits []tree.Edit
	for i := range 3000 {
		edits = append(edits, tree.Edit{Key: rec(i), Value: bytes.Repeat([]byte{byte(i)}, 1000)})
	}
	edit(t, ts.store, edits...)
	qc := rawConn(t, ts, &quic.Config{InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10,
		InitialConnectionReceiveWindow: 32 << 10, MaxConnectionReceiveWindow: 32 << 10, MaxIdleTimeout: time.Minute})
	w := rawHello(t, qc, hello{Token: alice})
	root, err := node.Decode(w.RootNode)
	if err != nil || root.IsLeaf() {
		t.Fatalf("root: %v", err)
	}
	var kids []nodeReq
	for i := 0; i < root.Len(); i++ {
		h, _ := root.Child(i)
		kids = append(kids, nodeReq{Hash: h})
	}
	st, _ := qc.OpenStreamSync(context.Background())
	st.Write(appendFrame(nil, msgGetNodes, encodeNodeReqs(node.XXH3, kids)))
	st.Close()
	waitClosed(t, qc)
	if _, err := Root(context.Background(), ts.opts(bob)); err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
}

// fakeServer answers one connection with handle, for testing the client
// against a lying server.
func fakeServer(t *testing.T, handle func(qc *quic.Conn, hello hello, ex *exchange)) (addr, fp string) {
	t.Helper()
	cert, err := loadOrCreateCert(filepath.Join(t.TempDir(), "cert"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(cert), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		st, err := qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		var c counters
		ex := newExchange(st, &c, 5*time.Second, DefaultMaxFrame, "test client")
		f, err := ex.recv(msgHello)
		if err != nil {
			return
		}
		h, _ := decodeHello(f.Payload)
		handle(qc, h, ex)
		<-qc.Context().Done()
	}()
	return ln.Addr().String(), Fingerprint(cert.Certificate[0])
}

// TestLyingServer: a client verifies everything a server sends.
func TestLyingServer(t *testing.T) {
	for _, alg := range node.Algs {
		t.Run(alg.String(), func(t *testing.T) { lyingServer(t, alg) })
	}
}

func lyingServer(t *testing.T, alg node.Alg) {
	real := node.Encode(alg, 0, []node.Entry{{Key: []byte("k"), Payload: node.InlineValue([]byte("v")).AppendPayload(nil)}})
	// serve answers the client's one request of type want on a new
	// stream with frames, and reports whether the request came.
	serve := func(qc *quic.Conn, want byte, frames ...frame) {
		st, err := qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		var c counters
		ex := newExchange(st, &c, 5*time.Second, DefaultMaxFrame, "test client")
		if _, err := ex.recv(want); err != nil {
			ex.fail(err) // an Error frame the client does not expect: not ErrProtocol
			return
		}
		for _, f := range frames {
			ex.send(f.Type, f.Payload)
		}
		ex.closeSend()
	}
	welcomeTo := func(ex *exchange, h hello, root []byte) {
		ex.send(msgWelcome, welcome{ClientID: "x", Root: alg.Sum(root), Config: h.Config, RootNode: root, Hash: alg}.encode())
		ex.closeSend()
	}
	branchAt := func(level int, children ...[]byte) []byte {
		var es []node.Entry
		for i, c := range children {
			es = append(es, node.Entry{Key: []byte{'k', byte(i)}, Payload: node.AppendChildPayload(nil, alg.Sum(c), 1)})
		}
		return node.Encode(alg, level, es)
	}
	branchOver := func(children ...[]byte) []byte { return branchAt(1, children...) }
	// A leaf with an out-of-line value of one chunk.
	chunk := bytes.Repeat([]byte("c"), 2*node.MaxInlineValue)
	index := node.EncodeValueIndex(alg, []node.Chunk{{Hash: alg.Sum(chunk), Size: uint32(len(chunk))}})
	refLeaf := node.Encode(alg, 0, []node.Entry{{Key: []byte("k"), Payload: node.RefValue(alg.Sum(index), uint64(len(chunk))).AppendPayload(nil)}})
	other := node.Encode(alg, 0, []node.Entry{{Key: []byte("z"), Payload: node.InlineValue([]byte("v")).AppendPayload(nil)}})

	tests := []struct {
		name   string
		byNode bool // the client walks node by node (GetNodes), as one that holds a tree does, not by subtree streams
		handle func(qc *quic.Conn, h hello, ex *exchange)
		want   error
	}{
		{"root node with the wrong hash", false, func(qc *quic.Conn, h hello, ex *exchange) {
			ex.send(msgWelcome, welcome{ClientID: "x", Root: alg.Sum([]byte("other")), Config: h.Config, RootNode: real, Hash: alg}.encode())
			ex.closeSend()
		}, ErrProtocol},
		{"corrupt root node", false, func(qc *quic.Conn, h hello, ex *exchange) {
			bad := append([]byte(nil), real...)
			bad[len(bad)-1] ^= 0xff
			bad = append(bad, 1)
			ex.send(msgWelcome, welcome{ClientID: "x", Root: alg.Sum(bad), Config: h.Config, RootNode: bad, Hash: alg}.encode())
			ex.closeSend()
		}, ErrProtocol},
		{"oversized frame", false, func(qc *quic.Conn, h hello, ex *exchange) {
			ex.st.Write([]byte{ProtocolVersion, msgWelcome, 0xff, 0xff, 0xff, 0xff, 0x0f})
			ex.st.Close()
		}, ErrFrameTooLarge},
		{"unknown message", false, func(qc *quic.Conn, h hello, ex *exchange) {
			ex.st.Write([]byte{ProtocolVersion, 0x66, 0})
			ex.st.Close()
		}, ErrProtocol},
		{"wrong node in walk", true, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(node.EmptyLeaf(alg)))
			serve(qc, msgGetNodes, frame{msgNode, real}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"delta without a hint", true, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(real))
			serve(qc, msgGetNodes, frame{msgNodeDelta, []byte{0, 1, deltaLiteral, 1, 'k', 2, 0, 'v'}}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"wrong node in subtree stream", false, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(node.EmptyLeaf(alg)))
			serve(qc, msgGetTree, frame{msgNode, real}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"subtree stream cut short", false, func(qc *quic.Conn, h hello, ex *exchange) {
			mid := branchOver(real, other)
			welcomeTo(ex, h, branchAt(2, mid))
			serve(qc, msgGetTree, frame{msgNode, mid}, frame{msgNode, real}, frame{msgEnd, encodeEnd(2)})
		}, ErrProtocol},
		{"subtree stream's count lies", false, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(real))
			serve(qc, msgGetTree, frame{msgNode, real}, frame{msgEnd, encodeEnd(2)})
		}, ErrProtocol},
		{"subtree stream goes on after its end", false, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(real))
			serve(qc, msgGetTree, frame{msgNode, real}, frame{msgEnd, encodeEnd(1)}, frame{msgNode, other})
		}, ErrProtocol},
		{"value blob that is not the value's", false, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(refLeaf))
			serve(qc, msgGetTree, frame{msgNode, refLeaf}, frame{msgBlob, index}, frame{msgBlob, []byte("not the chunk")}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"value index that is not one", false, func(qc *quic.Conn, h hello, ex *exchange) {
			bad := node.Encode(alg, 0, []node.Entry{{Key: []byte("k"), Payload: node.RefValue(alg.Sum(chunk), uint64(len(chunk))).AppendPayload(nil)}})
			welcomeTo(ex, h, branchOver(bad))
			serve(qc, msgGetTree, frame{msgNode, bad}, frame{msgBlob, chunk}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"value blobs missing", false, func(qc *quic.Conn, h hello, ex *exchange) {
			welcomeTo(ex, h, branchOver(refLeaf))
			serve(qc, msgGetTree, frame{msgNode, refLeaf}, frame{msgEnd, encodeEnd(1)})
		}, ErrProtocol},
		{"server hangs", false, func(qc *quic.Conn, h hello, ex *exchange) {}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, fp := fakeServer(t, tt.handle)
			c := openStoreHash(t, t.TempDir(), smallChunks, alg)
			defer c.Close()
			walkStreams = !tt.byNode
			defer func() { walkStreams = true }()
			opts := ClientOptions{Server: addr, Token: "t", Fingerprint: fp, IOTimeout: 500 * time.Millisecond}
			_, err := Sync(context.Background(), c, opts)
			t.Log(err)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if _, ok, _ := c.Ref(BaseRef); ok {
				t.Fatal("base moved after a failed sync")
			}
		})
	}
}

var _ = io.EOF
var _ tls.Config

// TestMaxSessions: connections past the limit are refused as busy, and a
// slot frees when a session ends.
func TestMaxSessions(t *testing.T) {
	ts := startServer(t, smallChunks, func(o *ServerOptions) { o.MaxSessions = 2 })
	a := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, a, hello{Token: alice, Config: smallChunks})
	b := rawConn(t, ts, &quic.Config{MaxIdleTimeout: time.Minute})
	rawHello(t, b, hello{Token: alice, Config: smallChunks})
	_, err := Root(context.Background(), ts.opts(bob))
	var pe *peerError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "server busy") {
		t.Fatalf("third connection: err = %v, want server busy", err)
	}
	a.CloseWithError(0, "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := Root(context.Background(), ts.opts(bob))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
