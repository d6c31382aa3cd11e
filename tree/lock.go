package tree

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The store lock is ARBOR.lock, held while the store is open, through
// Pebble's vfs.Default.Lock: an fcntl (POSIX) write lock on Unix, the file
// opened with no sharing on Windows. POSIX locks belong to the process, so
// a second lock taken by the same process would succeed; Pebble refuses
// one on the same path string, and lockedDirs refuses one on the same
// directory under any spelling (relative, through a symbolic link). The
// process must not open ARBOR.lock otherwise: closing any descriptor of
// the file drops a POSIX lock.

// lockedDirs holds the directories, resolved, whose stores this process
// has open.
var lockedDirs = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// dirLock is a held store lock.
type dirLock struct {
	key  string // in lockedDirs
	file io.Closer
	once sync.Once
}

// Close releases the lock.
func (l *dirLock) Close() error {
	var err error
	l.once.Do(func() {
		err = l.file.Close()
		lockedDirs.Lock()
		delete(lockedDirs.m, l.key)
		lockedDirs.Unlock()
	})
	return err
}

// lockDir takes dir's store lock, or fails with ErrLocked if another
// process or Store holds it.
func lockDir(dir string) (io.Closer, error) {
	key, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(key); err == nil {
		key = real
	}
	lockedDirs.Lock()
	defer lockedDirs.Unlock()
	if lockedDirs.m[key] {
		return nil, fmt.Errorf("open store %s: %w (this process has it open)", dir, ErrLocked)
	}
	f, err := vfs.Default.Lock(filepath.Join(key, lockFile))
	if err != nil {
		if lockHeld(err) || strings.Contains(err.Error(), "held by current process") {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	lockedDirs.m[key] = true
	return &dirLock{key: key, file: f}, nil
}
