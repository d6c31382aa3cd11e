package net

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-sync/arbor/scope"
)

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Token
		wantErr string
	}{
		{name: "empty", in: ""},
		{name: "comments and blanks", in: "# header\n\n  # indented\n", want: nil},
		{name: "two clients", in: "aaaaaaaaaaaaaaaa alice\nbbbbbbbbbbbbbbbb\tbob  # trailing comment\n",
			want: []Token{{Token: "aaaaaaaaaaaaaaaa", ClientID: "alice"}, {Token: "bbbbbbbbbbbbbbbb", ClientID: "bob"}}},
		{name: "scopes", in: "aaaaaaaaaaaaaaaa alice read=* write=users/\nbbbbbbbbbbbbbbbb bob read=a/,shared/\n", want: []Token{
			{Token: "aaaaaaaaaaaaaaaa", ClientID: "alice", Read: scope.All, Write: scope.Prefixes([]byte("users/"))},
			{Token: "bbbbbbbbbbbbbbbb", ClientID: "bob", Read: scope.Prefixes([]byte("a/"), []byte("shared/"))}}},
		{name: "bad scope", in: "aaaaaaaaaaaaaaaa alice read=a/,,b/\n", wantErr: "line 1: read"},
		{name: "missing client id", in: "okokokokokokokok a\naaaaaaaaaaaaaaaa\n", wantErr: "line 2"},
		{name: "bare extra field", in: "aaaaaaaaaaaaaaaa alice extra\n", wantErr: "line 1: field \"extra\""},
		{name: "duplicate token", in: "aaaaaaaaaaaaaaaa alice\ncccccccccccccccc carol\naaaaaaaaaaaaaaaa bob\n", wantErr: "line 3: token already defined on line 1"},
		{name: "token with equals", in: "a=bbbbbbbbbbbbbbbbbb alice\n", wantErr: "line 1"},
		// Fail closed: nothing that is not understood widens a grant.
		{name: "unknown field", in: "aaaaaaaaaaaaaaaa alice color=blue\n", wantErr: "line 1: unknown field \"color\""},
		{name: "misspelled scope", in: "aaaaaaaaaaaaaaaa alice wirte=a/\n", wantErr: "line 1: unknown field \"wirte\""},
		{name: "empty write scope", in: "aaaaaaaaaaaaaaaa alice write=\n", wantErr: "line 1: write= lists no prefix"},
		{name: "empty read scope", in: "aaaaaaaaaaaaaaaa alice read=,\n", wantErr: "line 1: read= lists no prefix"},
		{name: "field twice", in: "aaaaaaaaaaaaaaaa alice write=a/ write=b/\n", wantErr: "line 1: field write= given twice"},
		{name: "short token", in: "abc alice\n", wantErr: "line 1: token of 3 bytes is too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokens([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Token != w.Token || g.ClientID != w.ClientID || !g.Read.Equal(orAll(w.Read)) || !g.Write.Equal(orAll(w.Write)) {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestLoadTokensNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("xxxxxxxxxxxxxxxxxx\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadTokens(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("err = %v", err)
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file: no error")
	}
}
