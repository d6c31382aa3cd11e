package net

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Token is one client credential from a tokens file.
type Token struct {
	// Token is the secret the client presents.
	Token string
	// ClientID is the stable identity the server assigns the client.
	ClientID string
}

// LoadTokens reads a tokens file: one "TOKEN CLIENT_ID" per line,
// whitespace-separated, with "#" starting a comment. Further fields of the
// form name=value (such as read= and write=) are accepted and ignored.
// Errors name the file and line.
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
		for _, extra := range f[2:] {
			if !strings.Contains(extra, "=") {
				return nil, fmt.Errorf("line %d: field %q is not name=value", line, extra)
			}
		}
		if prev, ok := seen[f[0]]; ok {
			return nil, fmt.Errorf("line %d: token already defined on line %d", line, prev)
		}
		seen[f[0]] = line
		out = append(out, Token{Token: f[0], ClientID: f[1]})
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
