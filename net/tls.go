package net

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/arbor-sync/arbor/internal/fsutil"
	"math/big"
	stdnet "net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate file names in ServerOptions.CertDir.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// Fingerprint returns the SHA-256 of a DER certificate as lowercase hex.
func Fingerprint(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// normFingerprint accepts hex with optional colons and any case.
func normFingerprint(s string) string {
	return strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(s))
}

// loadOrCreateCert loads cert.pem and key.pem from dir, creating a new
// self-signed ECDSA P-256 certificate there if neither exists.
func loadOrCreateCert(dir string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	if errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist) {
		if err := createCert(dir, certPath, keyPath); err != nil {
			return tls.Certificate{}, fmt.Errorf("create server certificate in %s: %w", dir, err)
		}
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load server certificate from %s: %w", dir, err)
	}
	return c, nil
}

func createCert(dir, certPath, keyPath string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	names := []string{"localhost", "arbor"}
	if host != "" {
		names = append(names, host)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "arbor server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           []stdnet.IP{stdnet.IPv4(127, 0, 0, 1), stdnet.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	// Key first: a crash between the two writes leaves a key and no
	// certificate, which the next start reports instead of overwriting.
	if err := fsutil.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// serverTLS returns the server's TLS configuration.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN, ALPNv1},
		MinVersion:   tls.VersionTLS13,
	}
}

// clientTLS returns the client's TLS configuration. With a CA file the
// server's chain is verified normally against it. With a pin, Go's chain
// verification (which a self-signed certificate cannot pass) is replaced by
// VerifyConnection, which always runs and accepts only a leaf whose SHA-256
// equals the pin. With neither (trust on first use) any certificate is
// accepted; the caller records its fingerprint.
func clientTLS(host, pin, caFile string, tofu bool) (*tls.Config, error) {
	conf := &tls.Config{NextProtos: []string{ALPN, ALPNv1}, MinVersion: tls.VersionTLS13, ServerName: host}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates", caFile)
		}
		conf.RootCAs = pool
		return conf, nil
	}
	pin = normFingerprint(pin)
	if pin == "" && !tofu {
		return nil, fmt.Errorf("%w: unknown server %s: pass its fingerprint (printed by the server on start) or trust it explicitly", ErrFingerprint, host)
	}
	// Chain verification is replaced, not skipped: VerifyConnection below
	// checks the pin on every handshake.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: server %s presented no certificate", ErrFingerprint, host)
		}
		leaf := cs.PeerCertificates[0]
		fp := Fingerprint(leaf.Raw)
		if pin != "" && fp != pin {
			return fmt.Errorf("%w: server %s presented certificate %s, pinned %s", ErrFingerprint, host, fp, pin)
		}
		// The handshake proved possession of leaf's key; with a pin that is
		// the whole check. Reject certificates that are not yet or no longer valid.
		now := time.Now()
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return fmt.Errorf("%w: server %s certificate %s is outside its validity period", ErrFingerprint, host, fp)
		}
		return nil
	}
	return conf, nil
}

// CreateCert creates a self-signed server certificate (CertFile, KeyFile)
// in dir unless one is there: what a server does on its first start. A
// cluster's first server shares the one it creates with the others.
func CreateCert(dir string) error {
	_, err := loadOrCreateCert(dir)
	return err
}
