// Package workerproc runs a load generator as several processes of its own binary, so that
// each holds at most as many sockets as the per-process open-files cap allows. The
// coordinator re-executes itself with an environment variable marking the copy as a
// worker (Start); they talk in JSON lines: the coordinator writes the worker's config,
// then commands, on the worker's stdin (ReadConfig, Commands); the worker answers on its
// stdout, in whatever shape its command defines.
package workerproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Proc is one worker process as the coordinator that started it sees it. Its methods are
// for the coordinator's goroutine; Out may be read by another.
type Proc struct {
	// Index is the worker's index, also the value of its marking variable.
	Index int
	// Cmd is the running process; Cmd.ProcessState is set once Wait returned.
	Cmd *exec.Cmd
	// Out is the worker's stdout: its answers, one JSON line each.
	Out io.Reader

	in  io.WriteCloser
	enc *json.Encoder
}

// Start re-executes this program as worker index, with env=<index> added to its
// environment and its stderr this process's, and writes config as the first line of its
// stdin. On error no process is left running.
func Start(env string, index int, config any) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env+"="+strconv.Itoa(index))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %d: %w", index, err)
	}
	p := &Proc{Index: index, Cmd: cmd, Out: out, in: in, enc: json.NewEncoder(in)}
	if err := p.Send(config); err != nil {
		_ = in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("configure worker %d: %w", index, err)
	}
	return p, nil
}

// Send writes v to the worker as one JSON line.
func (p *Proc) Send(v any) error { return p.enc.Encode(v) }

// CloseInput closes the worker's stdin: a worker ends by itself when its input ends, so
// the coordinator closes every worker's before waiting for any.
func (p *Proc) CloseInput() { _ = p.in.Close() }

// Wait waits up to grace for the worker to exit, then kills it; it reports whether it had
// to. After Wait, Cmd.ProcessState holds the worker's resource usage.
func (p *Proc) Wait(grace time.Duration) (killed bool) {
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
		return false
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-done
		return true
	}
}

// ReadConfig reads the worker's config, the first line of r, into cfg, and returns the
// scanner over the lines that follow (Commands), each at most maxLine bytes.
func ReadConfig(r io.Reader, maxLine int, cfg any) (*bufio.Scanner, error) {
	in := bufio.NewScanner(r)
	in.Buffer(make([]byte, 64<<10), maxLine)
	if !in.Scan() {
		return nil, errors.New("worker: no config on stdin")
	}
	if err := json.Unmarshal(in.Bytes(), cfg); err != nil {
		return nil, fmt.Errorf("worker: decode config: %w", err)
	}
	return in, nil
}

// Commands decodes each further line of in as a C (a line that does not decode is
// skipped) and sends it on the channel it returns, which is closed when in ends (the
// coordinator closed the pipe or went away) or when a command finds ctx ended. A read of
// stdin cannot be interrupted: until then its goroutine waits on in.
func Commands[C any](ctx context.Context, in *bufio.Scanner) <-chan C {
	cmds := make(chan C)
	go func() {
		defer close(cmds)
		for in.Scan() {
			var c C
			if json.Unmarshal(in.Bytes(), &c) == nil {
				select {
				case cmds <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return cmds
}
