// Package fsutil holds the file-system helpers that more than one Arbor
// package needs.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path so that after a crash path holds
// either its old contents or all of data: it writes a temporary file,
// fsyncs it, renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
