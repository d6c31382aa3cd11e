//go:build unix && !linux

package clustertest

import "syscall"

// procAttr puts SeaweedFS in a process group of its own, so signals reach
// every process it may start.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
