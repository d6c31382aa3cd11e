package clustertest

import "syscall"

// procAttr puts SeaweedFS in a process group of its own, so signals reach
// every process it may start, and has the kernel kill it if the test
// binary dies without running its cleanups (a panic or a -timeout).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
