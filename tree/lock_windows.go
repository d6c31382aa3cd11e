//go:build windows

package tree

import (
	"errors"
	"syscall"
)

// Windows error codes of CreateFile on a file another handle has open
// without sharing (vfs.Default.Lock opens the lock file so).
const (
	errorSharingViolation syscall.Errno = 32
	errorLockViolation    syscall.Errno = 33
)

// lockHeld reports whether err, from vfs.Default.Lock, means another
// process (or handle) holds the lock.
func lockHeld(err error) bool {
	return errors.Is(err, errorSharingViolation) || errors.Is(err, errorLockViolation)
}
