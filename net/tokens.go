package net

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/arbor-sync/arbor/scope"
)

// Token is one client credential from a tokens file.
type Token struct {
	// Token is the secret the client presents.
	Token string
	// ClientID is the stable identity the server assigns the client.
	ClientID string
	// Read is the scope the client may read: the server serves it only
	// nodes on the walk of this scope and only values of keys in it. The
	// zero Scope means every key (scope.All).
	Read scope.Scope
	// Write is the scope the client may push changes to; a push with any
	// key outside it is refused whole. The zero Scope means every key. The
	// server grants it only within Read: a client may write only what it
	// may read.
	Write scope.Scope
}

// MinTokenLen is the shortest token a tokens file accepts: 16 bytes, 128
// bits if random (e.g. 'openssl rand -hex 16' gives 32).
const MinTokenLen = 16

// orAll maps the zero Scope (a Token field left unset) to scope.All.
func orAll(s scope.Scope) scope.Scope {
	if s.Ranges() == nil {
		return scope.All
	}
	return s
}

// LoadTokens reads a tokens file: one "TOKEN CLIENT_ID" per line,
// whitespace-separated, with "#" starting a comment. A token is at least
// MinTokenLen bytes. Further fields have the form name=value: read= and
// write= give the token's read and write scopes as comma-separated key
// prefixes ("*": every key; an absent field: every key; an absent write=
// means the read scope, and a write= outside read= is an error), e.g.
// "tok-a client-a read=a/,shared/ write=a/". The parser fails closed: an
// unknown field, a field given twice or an empty scope list is an error,
// never a wider grant. Errors name the file and line.
func LoadTokens(path string) ([]Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	toks, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return toks, nil
}

// ParseTokens parses the contents of a tokens file (see LoadTokens).
func ParseTokens(data []byte) ([]Token, error) {
	var out []Token
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want \"TOKEN CLIENT_ID\", got one field", line)
		}
		if strings.Contains(f[0], "=") {
			return nil, fmt.Errorf("line %d: token %q contains '='", line, redact(f[0]))
		}
		if strings.Contains(f[1], "=") {
			return nil, fmt.Errorf("line %d: client id %q contains '='", line, f[1])
		}
		if len(f[0]) > maxToken {
			return nil, fmt.Errorf("line %d: token longer than %d bytes", line, maxToken)
		}
		if len(f[0]) < MinTokenLen {
			return nil, fmt.Errorf("line %d: token of %d bytes is too short to be a secret (at least %d)", line, len(f[0]), MinTokenLen)
		}
		tok := Token{Token: f[0], ClientID: f[1], Read: scope.All, Write: scope.All}
		given := map[string]bool{}
		for _, extra := range f[2:] {
			name, value, ok := strings.Cut(extra, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: field %q is not name=value", line, extra)
			}
			if given[name] {
				return nil, fmt.Errorf("line %d: field %s= given twice", line, name)
			}
			given[name] = true
			switch name {
			default:
				return nil, fmt.Errorf("line %d: unknown field %q (known: read=, write=)", line, name)
			case "read", "write":
				if strings.Trim(value, ", ") == "" {
					return nil, fmt.Errorf("line %d: %s= lists no prefix (write %s=* for every key)", line, name, name)
				}
				sc, err := scope.ParsePrefixList(value)
				if err != nil {
					return nil, fmt.Errorf("line %d: %s: %w", line, name, err)
				}
				if name == "read" {
					tok.Read = sc
				} else {
					tok.Write = sc
				}
			}
		}
		if given["write"] && given["read"] && !tok.Read.Covers(tok.Write) {
			// A key one may write but not read would make push answers an
			// oracle for its value (the root moves or not), and a write
			// there could never lose to the server's value.
			return nil, fmt.Errorf("line %d: write scope %s is not inside the read scope %s", line, tok.Write, tok.Read)
		}
		if prev, ok := seen[f[0]]; ok {
			return nil, fmt.Errorf("line %d: token already defined on line %d", line, prev)
		}
		seen[f[0]] = line
		out = append(out, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// redact shows only the start of a secret.
func redact(tok string) string {
	if len(tok) <= 4 {
		return "****"
	}
	return tok[:4] + "…"
}
