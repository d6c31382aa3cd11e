package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where a report was measured.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel"`
	RmemMax   string `json:"rmem_max"`
	WmemMax   string `json:"wmem_max"`
	Commit    string `json:"commit"`
	Rsync     string `json:"rsync"`
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func detectMachine() Machine {
	m := Machine{
		CPU:       "unknown",
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		Kernel:    readTrim("/proc/sys/kernel/osrelease"),
		RmemMax:   readTrim("/proc/sys/net/core/rmem_max"),
		WmemMax:   readTrim("/proc/sys/net/core/wmem_max"),
		Commit:    "unknown",
		Rsync:     "not installed",
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if p, err := exec.LookPath("rsync"); err == nil {
		if out, err := exec.Command(p, "--version").Output(); err == nil {
			m.Rsync, _, _ = strings.Cut(string(out), "\n")
		}
	}
	return m
}
