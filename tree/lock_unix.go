//go:build unix

package tree

import (
	"errors"
	"syscall"
)

// lockHeld reports whether err, from vfs.Default.Lock, means another
// process holds the lock (fcntl F_SETLK fails with EAGAIN or EACCES).
func lockHeld(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES)
}
