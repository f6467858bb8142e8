package main

import (
	"os/exec"
	"syscall"
)

// childOfUs has the kernel kill cmd when this program dies, however it dies: a comparison
// interrupted half-way leaves no redis-server or gateway behind.
func childOfUs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
