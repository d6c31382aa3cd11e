//go:build !unix

package clustertest

import (
	"os"
	"syscall"
)

const (
	sigTerm = 0
	sigKill = 1
)

func procAttr() *syscall.SysProcAttr { return nil }

// signalGroup kills p: there are no process groups or SIGTERM here.
func signalGroup(p *os.Process, _ int) error {
	return p.Kill()
}
