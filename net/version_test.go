package net

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// serverOfALPN listens with a real certificate and answers only the TLS
// handshake, offering protos: a server that speaks only those versions.
func serverOfALPN(t *testing.T, protos ...string) (addr, fp string) {
	t.Helper()
	cert, err := loadOrCreateCert(filepath.Join(t.TempDir(), "cert"))
	if err != nil {
		t.Fatal(err)
	}
	conf := serverTLS(cert)
	conf.NextProtos = protos
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				// An arbor/1 server reads a Hello; this one never answers.
				qc.AcceptStream(context.Background())
			}()
		}
	}()
	return ln.Addr().String(), Fingerprint(cert.Certificate[0])
}

// TestClientAgainstPreviousVersionServer: a client meeting a server that
// speaks only arbor/1 fails at the handshake with an upgrade error, and a
// follower stops on it instead of retrying forever.
func TestClientAgainstPreviousVersionServer(t *testing.T) {
	addr, fp := serverOfALPN(t, ALPNv1)
	c := openStore(t, t.TempDir(), smallChunks)
	opts := ClientOptions{Server: addr, Token: alice, Fingerprint: fp, IOTimeout: 2 * time.Second}
	_, err := Sync(context.Background(), c, opts)
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "upgrade the server") {
		t.Fatalf("sync with an arbor/1 server: %v, want ErrVersion saying to upgrade the server", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Follow(ctx, c, opts, FollowOptions{MinBackoff: 10 * time.Millisecond}); !errors.Is(err, ErrVersion) {
		t.Fatalf("Follow against an arbor/1 server: %v, want it to stop with ErrVersion", err)
	}

	// A server of a later version that dropped both of ours.
	addr, fp = serverOfALPN(t, "arbor/9")
	_, err = Sync(context.Background(), c, ClientOptions{Server: addr, Token: alice, Fingerprint: fp, IOTimeout: 2 * time.Second})
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("sync with an arbor/9 server: %v, want ErrVersion", err)
	}
}

// TestPreviousVersionClientAgainstServer: an arbor/1 client (it offers only
// arbor/1 and sends a version-1 Hello) is told at once to upgrade.
func TestPreviousVersionClientAgainstServer(t *testing.T) {
	ts := startServer(t, smallChunks, nil)
	conf, err := clientTLS("127.0.0.1", ts.fp, "", false)
	if err != nil {
		t.Fatal(err)
	}
	conf.NextProtos = []string{ALPNv1}
	qc, err := quic.DialAddr(context.Background(), ts.addr, conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	st, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A version-1 Hello frame: version 1, type Hello, a short payload.
	st.Write([]byte{1, msgHello, 3, 0, 0, 0})
	st.Close()
	err = waitClosed(t, qc)
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || uint64(ae.ErrorCode) != codeVersion || !strings.Contains(ae.ErrorMessage, "upgrade the client") {
		t.Fatalf("arbor/1 client closed with %v, want code %d saying to upgrade the client", err, codeVersion)
	}
	var _ tls.Config
}
