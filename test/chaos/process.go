//go:build chaos

/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kipam/kipam/internal/testenv"
)

// proc is one child process (etcd, kube-apiserver, kube-controller-manager,
// a kipam replica) that the harness starts, signals, kills and starts again
// with the same arguments: so on the same ports and the same data.
type proc struct {
	name string
	path string
	args []string
	// extra is appended to args at each start while a fault wants it (a
	// replica's clock offset); under mu.
	extra []string
	log   string // file its output is appended to
	// ready, when set, reports whether a started process serves; start
	// waits for it.
	ready func(ctx context.Context) error

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{} // closed when the current process exited
	err       error         // how it exited, once done is closed
	stopped   bool          // SIGSTOPped and not continued
	starts    int
	startedAt time.Time
	tail      *testenv.Tail

	// held is set while a fault keeps the process down: the supervisor
	// does not start it again.
	held atomic.Bool
	// selfExits says how the process exited when nobody asked it to.
	selfExits []string
}

// supervise keeps p running as a kubelet or systemd would, until ctx ends:
// when it exits while not held, it is started again, after a back-off
// that doubles from 1 s to 16 s while it keeps failing.
func (p *proc) supervise(ctx context.Context, events func(format string, args ...any)) {
	delay := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.exited():
		}
		if p.held.Load() {
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return
			}
			continue
		}
		if time.Since(p.lastStart()) > time.Minute {
			delay = time.Second // it ran a while: not a crash loop
		}
		why := fmt.Sprintf("%v: %s", p.exitErr(), lastError(p.tail.String()))
		p.mu.Lock()
		p.selfExits = append(p.selfExits, why)
		p.mu.Unlock()
		events("%s exited on its own (%s); starting it again in %s", p.name, why, delay)
		if !sleepCtx(ctx, delay) {
			return
		}
		if p.held.Load() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		_ = p.start(sctx) // a start that fails shows as the next exit
		cancel()
		delay = min(2*delay, 16*time.Second)
	}
}

// setExtra sets the arguments added to args from the next start on.
func (p *proc) setExtra(extra ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = extra
}

func (p *proc) lastStart() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startedAt
}

func (p *proc) exits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.selfExits...)
}

// start runs the process and waits until ready says it serves, it exits,
// or ctx ends.
func (p *proc) start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil && !isClosed(p.done) {
		p.mu.Unlock()
		return fmt.Errorf("%s is already running", p.name)
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	p.starts++
	fmt.Fprintf(out, "\n===== chaos: start %d of %s at %s =====\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	if p.tail == nil {
		p.tail = &testenv.Tail{Size: 3 << 10}
	}
	cmd := exec.Command(p.path, append(slices.Clone(p.args), p.extra...)...)
	cmd.Stdout = io.MultiWriter(out, p.tail)
	cmd.Stderr = cmd.Stdout
	// Pdeathsig: the child dies with the thread that started it (kept
	// locked below until the child exits), so that nothing outlives a
	// harness that is killed. Setpgid: a terminal's Ctrl-C reaches the
	// harness only, which stops the children itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			_ = out.Close()
			close(done)
			return
		}
		started <- nil
		err := cmd.Wait()
		_ = out.Close()
		p.mu.Lock()
		p.err = err
		p.stopped = false
		p.mu.Unlock()
		close(done)
	}()
	if err := <-started; err != nil {
		p.mu.Unlock()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.done, p.err, p.stopped, p.startedAt = cmd, done, nil, false, time.Now()
	p.mu.Unlock()
	if p.ready == nil {
		return nil
	}
	for {
		err := p.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (%v); its output ends:\n%s", p.name, p.exitErr(), p.tail)
		case <-ctx.Done():
			return fmt.Errorf("%s was not ready in time: %v; its output ends:\n%s", p.name, err, p.tail)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// exited is closed once the current process has exited.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// running reports whether the process is alive (stopped counts as alive).
func (p *proc) running() bool { return !isClosed(p.exited()) }

// pid is the current process's id, 0 if none runs.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig to the running process; a process that is not running
// is an error.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return nil
}

// isStopped reports whether the process was SIGSTOPped and not continued.
func (p *proc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped && p.done != nil && !isClosed(p.done)
}

// kill ends the process with SIGKILL and waits for it to exit.
func (p *proc) kill() {
	done := p.exited()
	_ = p.signal(syscall.SIGKILL)
	<-done
}

// terminate sends SIGTERM (after SIGCONT, should it be stopped) and, after
// grace, SIGKILL; it returns once the process has exited.
func (p *proc) terminate(grace time.Duration) {
	done := p.exited()
	_ = p.signal(syscall.SIGCONT)
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		p.kill()
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// poll calls f every interval until it returns nil or ctx ends; it returns
// f's last error when ctx ends first.
func poll(ctx context.Context, interval time.Duration, f func(context.Context) error) error {
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
