package tree

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestStoreLock: a store open in this process cannot be opened again,
// under any spelling of its directory, until it is closed.
func TestStoreLock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	spellings := []string{dir, dir + string(filepath.Separator) + "."}
	if err := os.Symlink(dir, link); err == nil {
		spellings = append(spellings, link)
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, dir); err == nil {
			spellings = append(spellings, rel)
		}
	}
	for _, d := range spellings {
		if _, err := Open(d, &Options{NoSync: true}); !errors.Is(err, ErrLocked) {
			t.Fatalf("second open as %s: %v, want ErrLocked", d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(link, &Options{NoSync: true}) // or dir, without symlinks
	if errors.Is(err, os.ErrNotExist) {
		s, err = Open(dir, &Options{NoSync: true})
	}
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s.Close()
}

const envLockChild = "ARBOR_TEST_LOCK_CHILD_DIR"

// TestLockChild is TestStoreLockAcrossProcesses's child: it opens the
// store in $ARBOR_TEST_LOCK_CHILD_DIR and prints what happened.
func TestLockChild(t *testing.T) {
	dir := os.Getenv(envLockChild)
	if dir == "" {
		t.Skip("run by TestStoreLockAcrossProcesses")
	}
	s, err := Open(dir, &Options{NoSync: true})
	switch {
	case errors.Is(err, ErrLocked):
		fmt.Println("child: locked:", err)
	case err != nil:
		fmt.Println("child: error:", err)
	default:
		fmt.Println("child: opened")
		s.Close()
	}
}

// TestStoreLockAcrossProcesses: another process cannot open a store that
// is open here, and can once it is closed.
func TestStoreLockAcrossProcesses(t *testing.T) {
	if os.Getenv(envLockChild) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	child := func() string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envLockChild+"="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := child(); !strings.Contains(out, "child: locked:") || !strings.Contains(out, ErrLocked.Error()) {
		t.Fatalf("another process opened a locked store:\n%s", out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := child(); !strings.Contains(out, "child: opened") {
		t.Fatalf("another process could not open a closed store:\n%s", out)
	}
}

// TestPortableBuild: the package builds where syscall.Flock does not
// exist (Windows) and on macOS. Skipped with -short or without a go
// command; quick once the build cache holds the dependencies.
func TestPortableBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles")
	}
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		t.Skip("no go command")
	}
	for _, goos := range []string{"windows", "darwin"} {
		cmd := exec.Command(goCmd, "build", "-o", os.DevNull, ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build: %v\n%s", goos, err, out)
		}
	}
}
