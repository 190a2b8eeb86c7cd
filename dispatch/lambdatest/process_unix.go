//go:build unix

package lambdatest

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the emulator in a process group of its own, so that
// the function process it starts is stopped with it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills the emulator and the function process.
func killProcessGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // it may be gone already
	}
}
