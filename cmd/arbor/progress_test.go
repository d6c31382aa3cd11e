package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProgressOnTerminal: on a terminal, verify, gc and import's commit
// stage show what they are doing with the time elapsed (a spinner: the
// library reports no progress for them); elsewhere they print nothing on
// standard error.
func TestProgressOnTerminal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "records.tsv")
	if err := os.WriteFile(file, []byte(records(20000)), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "db")
	runTTY := func(tty bool, args ...string) string {
		t.Helper()
		var out, errb lockedBuffer
		if code := run(context.Background(), append([]string{"--db", db}, args...), strings.NewReader(""), &out, &errb, tty); code != 0 {
			t.Fatalf("arbor %q: exit %d, stderr %q", args, code, errb.String())
		}
		return errb.String()
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"import", file}, []string{"importing", "building the tree and committing", "settling"}},
		{[]string{"verify"}, []string{"verifying 20000 records"}},
		{[]string{"gc"}, []string{"collecting garbage"}},
	} {
		got := runTTY(true, c.args...)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("arbor %s on a terminal: stderr lacks %q:\n%q", c.args[0], w, got)
			}
		}
		if !strings.Contains(got, "[0s]") && !strings.Contains(got, "s]") {
			t.Errorf("arbor %s on a terminal: no elapsed time in %q", c.args[0], got)
		}
	}
	os.RemoveAll(db)
	for _, args := range [][]string{{"import", file}, {"verify"}, {"gc"}} {
		if got := runTTY(false, args...); got != "" {
			t.Errorf("arbor %s off a terminal wrote to stderr: %q", args[0], got)
		}
	}
}
