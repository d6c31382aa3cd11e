package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	stdnet "net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/quic-go/quic-go"
	"github.com/zeebo/xxh3"
)

// dump renders the records gen produces as a sorted dump: each record is
// its key followed by its value (both fixed size), in key order.
func dump(gen func(func(k, v []byte) error) error) []byte {
	var out []byte
	_ = gen(func(k, v []byte) error {
		out = append(out, k...)
		out = append(out, v...)
		return nil
	})
	return out
}

// copyServer is the full-copy baseline's server: for every connection it
// sends all records (the sorted dump, held in memory) and closes.
type copyServer struct {
	ln   stdnet.Listener
	data []byte
	wg   sync.WaitGroup
}

func newCopyServer(data []byte) (*copyServer, error) {
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("full copy: listen: %w", err)
	}
	s := &copyServer{ln: ln, data: data}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				var req [1]byte
				if _, err := io.ReadFull(c, req[:]); err != nil {
					return
				}
				_, _ = c.Write(s.data)
			}()
		}
	}()
	return s, nil
}

// Addr returns the server's TCP address.
func (s *copyServer) Addr() string { return s.ln.Addr().String() }

// Close stops accepting and waits for the transfers in progress.
func (s *copyServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// fullCopy fetches every record from the copy server at addr and writes
// them into the empty raw Pebble database db, in batches, with the given
// durability. It returns the bytes received and the xxh3 of the stream.
func fullCopy(ctx context.Context, addr string, db *pebble.DB, recSize int, sync bool) (int64, uint64, error) {
	var d stdnet.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("full copy: dial: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte{1}); err != nil {
		return 0, 0, fmt.Errorf("full copy: request: %w", err)
	}
	br := bufio.NewReaderSize(c, 256<<10)
	h := xxh3.New()
	rec := make([]byte, recSize)
	var total int64
	pb := db.NewBatch()
	defer func() { pb.Close() }()
	for {
		_, err := io.ReadFull(br, rec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return total, 0, fmt.Errorf("full copy: read: %w", err)
		}
		total += int64(recSize)
		h.Write(rec)
		if err := pb.Set(rec[:KeySize], rec[KeySize:], nil); err != nil {
			return total, 0, err
		}
		if pb.Count() >= pebbleBatch {
			if err := pb.Commit(pebble.NoSync); err != nil {
				return total, 0, err
			}
			pb.Close()
			pb = db.NewBatch()
		}
	}
	if err := pb.Commit(writeOpts(sync)); err != nil {
		return total, 0, err
	}
	return total, h.Sum64(), nil
}

// rsyncd is a local rsync daemon serving one directory as module "data".
type rsyncd struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// rsyncPath returns the rsync binary, or "" when it is not installed.
func rsyncPath() string {
	p, err := exec.LookPath("rsync")
	if err != nil {
		return ""
	}
	return p
}

// startRsyncd starts `rsync --daemon` on 127.0.0.1 serving dir, with its
// config and log in work.
func startRsyncd(ctx context.Context, rsync, dir, work string) (*rsyncd, error) {
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*stdnet.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(work, "rsyncd.conf")
	text := fmt.Sprintf("use chroot = no\nuid = %d\ngid = %d\nlog file = %s\n[data]\n\tpath = %s\n\tread only = yes\n",
		os.Getuid(), os.Getgid(), filepath.Join(work, "rsyncd.log"), dir)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(rsync, "--daemon", "--no-detach", "--config="+conf, "--address=127.0.0.1", "--port="+strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start rsync daemon: %w", err)
	}
	d := &rsyncd{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	for i := 0; i < 200; i++ {
		c, err := stdnet.DialTimeout("tcp", d.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("rsync daemon exited: see %s", filepath.Join(work, "rsyncd.log"))
		case <-ctx.Done():
			d.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	d.Close()
	return nil, errors.New("rsync daemon did not start listening within 2 s")
}

// Close kills the daemon and waits for it to exit.
func (d *rsyncd) Close() {
	if d.cmd.Process != nil {
		d.cmd.Process.Kill()
	}
	<-d.done
}

var rsyncBytes = regexp.MustCompile(`Total bytes sent: ([\d,.]+)\s+Total bytes received: ([\d,.]+)`)

// rsyncPull brings dest up to date with file name of the daemon at addr
// (through whatever relay addr is), forcing the delta algorithm.
func rsyncPull(ctx context.Context, rsync, addr, name, dest string) error {
	cmd := exec.CommandContext(ctx, rsync, "--ignore-times", "--no-whole-file", "--stats", "rsync://"+addr+"/data/"+name, dest)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("rsync: %w: %s", err, out)
	}
	if !rsyncBytes.Match(out) {
		return fmt.Errorf("rsync: no transfer statistics in output: %s", out)
	}
	return nil
}

// selfSignedTLS returns a throwaway certificate for 127.0.0.1.
func selfSignedTLS() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []stdnet.IP{stdnet.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

const rawALPN = "arbor-bench-raw"

// quicServer is the raw quic-go baseline's server: on every connection it
// accepts one stream, reads a one-byte request and writes data on it.
type quicServer struct {
	ln   *quic.Listener
	data []byte
	wg   sync.WaitGroup
}

func newQUICServer(data []byte) (*quicServer, error) {
	cert, err := selfSignedTLS()
	if err != nil {
		return nil, err
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{rawALPN}}, &quic.Config{})
	if err != nil {
		return nil, fmt.Errorf("raw quic: listen: %w", err)
	}
	s := &quicServer{ln: ln, data: data}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				st, err := c.AcceptStream(ctx)
				if err != nil {
					c.CloseWithError(1, "")
					return
				}
				var req [1]byte
				if _, err := io.ReadFull(st, req[:]); err != nil {
					c.CloseWithError(1, "")
					return
				}
				_, _ = st.Write(s.data)
				st.Close()
				// The client closes the connection once it has read all.
			}()
		}
	}()
	return s, nil
}

// Addr returns the server's UDP address.
func (s *quicServer) Addr() *stdnet.UDPAddr { return s.ln.Addr().(*stdnet.UDPAddr) }

// Close stops accepting connections.
func (s *quicServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// quicFetch dials the raw QUIC server at addr, reads the whole stream and
// returns the bytes read and their xxh3.
func quicFetch(ctx context.Context, addr string) (int64, uint64, error) {
	c, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{rawALPN}}, &quic.Config{})
	if err != nil {
		return 0, 0, fmt.Errorf("raw quic: dial: %w", err)
	}
	defer c.CloseWithError(0, "")
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("raw quic: open stream: %w", err)
	}
	if _, err := st.Write([]byte{1}); err != nil {
		return 0, 0, fmt.Errorf("raw quic: request: %w", err)
	}
	h := xxh3.New()
	n, err := io.Copy(h, st)
	if err != nil {
		return n, 0, fmt.Errorf("raw quic: read: %w", err)
	}
	return n, h.Sum64(), nil
}
