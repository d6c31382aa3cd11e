package clustertest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
)

// handedOut remembers every port this process has handed out, so two
// helpers in one test binary never get the same port even when the kernel
// offers it again after the probe listener closed.
var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago. The probe listeners are all open at once, so the n ports
// differ from each other; another process can still take one before the
// caller binds it, so callers retry on isAddrInUse.
func freePorts(n int) ([]int, error) {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	var (
		ports []int
		ls    []net.Listener
	)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("free ports: %d of %d found after %d tries", len(ports), n, tries)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free ports: listen on 127.0.0.1:0: %w", err)
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		if handedOut[p] {
			continue
		}
		ports = append(ports, p)
	}
	for _, p := range ports {
		handedOut[p] = true
	}
	return ports, nil
}

// isAddrInUse reports whether err says a listener could not bind its port.
func isAddrInUse(err error) bool {
	return err != nil && (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"))
}
