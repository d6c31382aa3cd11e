package main

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"os"
	"path/filepath"
	"strings"

	"github.com/arbor-sync/arbor"
)

// What a client store remembers of its server, as store metadata
// (tree.Store.Meta). The pin is the library's: Sync stores the server's
// certificate fingerprint under this name (net's metaFingerprint, not
// exported) and uses it when no fingerprint is given; the CLI reads it for
// the commands that do not go through Sync (the watch of 'sync --watch',
// 'root --server'). The pin is the certificate's, one for every server of
// a cluster (they share a certificate), so it holds whichever of them a
// sync reaches. The server addresses (a comma-separated list, as --server
// takes them) and the token file are the CLI's own, written after a
// successful sync. A raw token is never stored: only the path of the file
// it was read from.
const (
	metaServerPin = "net/server-fingerprint"
	metaServer    = "cli/server"
	metaTokenFile = "cli/token-file"
)

// remembered is what a store remembers of its server.
type remembered struct {
	server, tokenFile, pin string // server: a --server value, one address or a comma-separated list
}

// recall reads what db remembers ("" for what it does not).
func recall(db *arbor.DB) remembered {
	get := func(name string) string {
		b, err := db.Store().Meta(name)
		if err != nil {
			return ""
		}
		return string(b)
	}
	return remembered{server: get(metaServer), tokenFile: get(metaTokenFile), pin: get(metaServerPin)}
}

// remember stores the server addresses (joined as --server takes them)
// and, if the token came from a file, the file's absolute path, unless db
// already holds them. It reports whether anything changed.
func remember(ctx context.Context, db *arbor.DB, servers []string, tokenFile string) (bool, error) {
	server := joinServers(servers)
	old := recall(db)
	if tokenFile != "" {
		if abs, err := filepath.Abs(tokenFile); err == nil {
			tokenFile = abs
		}
	}
	if server == old.server && (tokenFile == "" || tokenFile == old.tokenFile) {
		return false, nil
	}
	b, err := db.Store().NewBatch()
	if err != nil {
		return false, err
	}
	defer b.Discard()
	b.SetMeta(metaServer, []byte(server))
	if tokenFile != "" {
		b.SetMeta(metaTokenFile, []byte(tokenFile))
	}
	return true, b.Commit(ctx)
}

// tokenFlags give a client's token: --token-file, the ARBOR_TOKEN
// environment variable, or --token (which every user of the machine can
// read in the process list).
type tokenFlags struct {
	TokenFile string `placeholder:"FILE" help:"Read the client token from the first line of FILE. A store remembers the file (never the token) after a successful sync."`
	Token     string `placeholder:"TOKEN" help:"The client token itself. Other users of this machine can see it in the process list ('ps'): prefer --token-file or the ARBOR_TOKEN environment variable."`
}

// token returns the token and the file it came from ("" if none): from
// --token or --token-file (not both), else ARBOR_TOKEN, else the token
// file the store remembers (rememberedFile, "" for none).
func (f tokenFlags) token(rememberedFile string) (tok, file string, err error) {
	switch {
	case f.Token != "" && f.TokenFile != "":
		return "", "", errors.New("give the token once: --token-file or --token, not both")
	case f.Token != "":
		return f.Token, "", nil
	case f.TokenFile != "":
		tok, err := readTokenFile(f.TokenFile)
		return tok, f.TokenFile, err
	}
	if tok := strings.TrimSpace(os.Getenv("ARBOR_TOKEN")); tok != "" {
		return tok, "", nil
	}
	if rememberedFile != "" {
		tok, err := readTokenFile(rememberedFile)
		if err != nil {
			return "", "", fmt.Errorf("%w (the store remembers this file from an earlier sync; pass --token-file to use another)", err)
		}
		return tok, rememberedFile, nil
	}
	return "", "", errors.New("no token: set ARBOR_TOKEN or pass --token-file FILE (or --token TOKEN, which other users can see in the process list)")
}

func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("token file %s: the first line is empty", path)
	}
	return tok, nil
}

// trustFlags say how a client trusts the server's certificate.
type trustFlags struct {
	Fingerprint string `placeholder:"HEX" help:"The server's certificate fingerprint, as 'arbor serve' prints it (one for all the servers of a cluster, which share a certificate). Remembered after the first sync."`
	Trust       bool   `help:"Trust an unknown server on first use (and with sync, remember its fingerprint)."`
	CA          string `name:"ca" placeholder:"FILE" help:"Verify the server against this CA file instead of a fingerprint."`
}

// parseServers splits a --server value: one address, host:port, or the
// comma-separated addresses of the servers of one cluster, tried in order.
func parseServers(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("--server %q: an empty address in the list", s)
		}
		if _, _, err := stdnet.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("--server: %q is not HOST:PORT: %w", a, err)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// joinServers is the --server value of a list of servers.
func joinServers(servers []string) string { return strings.Join(servers, ",") }

// clientOptions are the options every client command shares: the servers,
// the token and the trust from the flags, and what they leave out from
// what the store remembers (rem; the zero value for none). tokenFile is
// the file the token came from, if any.
func clientOptions(server string, tf tokenFlags, trust trustFlags, rem remembered) (opts arbor.SyncOptions, tokenFile string, err error) {
	if server == "" {
		server = rem.server
	}
	if server == "" {
		return opts, "", errors.New("no server: pass --server HOST:PORT, or HOST:PORT,HOST:PORT,… for the servers of a cluster (a store remembers it after a successful sync)")
	}
	servers, err := parseServers(server)
	if err != nil {
		return opts, "", err
	}
	tok, tokenFile, err := tf.token(rem.tokenFile)
	if err != nil {
		return opts, "", err
	}
	fp := trust.Fingerprint
	if fp == "" && trust.CA == "" {
		fp = rem.pin
	}
	return arbor.SyncOptions{Servers: servers, Token: tok, Fingerprint: fp, TrustOnFirstUse: trust.Trust, CAFile: trust.CA}, tokenFile, nil
}

// openCreating opens the store named by --db, creating it if needed, and
// reports whether this call created its directory: a command that then
// fails removes it (see discardCreated), so a failed first sync or import
// leaves nothing behind.
func (e *env) openCreating() (db *arbor.DB, created bool, err error) {
	if e.global.DB != "" {
		_, serr := os.Stat(e.global.DB)
		created = errors.Is(serr, os.ErrNotExist)
	}
	db, err = e.openDB(false)
	if err != nil && created {
		os.RemoveAll(e.global.DB)
	}
	return db, created, err
}

// discardCreated closes db and removes the directory openCreating made.
func (e *env) discardCreated(db *arbor.DB) {
	db.Close()
	os.RemoveAll(e.global.DB)
}
