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

package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Controllers are the kube-controller-manager controllers that kipam relies
// on and envtest lacks: the garbage collector deletes claims whose owner is
// gone, the namespace controller those of a deleted namespace, and kipam's
// finalizer then releases their prefixes.
var Controllers = []string{"garbage-collector-controller", "namespace-controller"}

// ControllerManager is a kube-controller-manager process running
// Controllers against an envtest control plane.
type ControllerManager struct {
	cmd  *exec.Cmd
	dir  string
	logs *Tail
	done chan struct{} // closed once the process has exited
	err  error         // how it exited; read only after done
	stop sync.Once
}

// StartControllerManager starts kube-controller-manager from env's binary
// assets against its running API server, as a system:masters user, and
// waits until it reports healthy. Its logs go to out (nil: discarded). Call
// Stop before stopping env.
func StartControllerManager(env *envtest.Environment, out io.Writer) (*ControllerManager, error) {
	bin := filepath.Join(env.BinaryAssetsDirectory, "kube-controller-manager")
	if err := present(bin); err != nil {
		return nil, err
	}
	admin, err := env.AddUser(envtest.User{Name: "kipam-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding kube-controller-manager's user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kipam-kcm-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if out == nil {
		out = io.Discard
	}
	c := &ControllerManager{dir: dir, logs: &Tail{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin,
		"--kubeconfig="+filepath.Join(dir, "kubeconfig"),
		"--controllers="+strings.Join(Controllers, ","),
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		// Deleting a namespace walks every resource type in it; the default
		// 20 QPS makes that take seconds.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	)
	c.cmd.Stdout = io.MultiWriter(out, c.logs)
	c.cmd.Stderr = c.cmd.Stdout
	c.cmd.SysProcAttr = sysProcAttr()

	started := make(chan error, 1)
	go func() {
		// Pdeathsig belongs to the thread that forks the child: keep this
		// goroutine on it until the child exits, so that a test binary that
		// dies without calling Stop still takes the child with it. The
		// thread ends with the goroutine.
		runtime.LockOSThread()
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	if err := c.waitHealthy(port, 2*time.Minute); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// waitHealthy polls the /healthz endpoint, which turns healthy once the
// controllers have started, until it answers 200 or the process exits.
func (c *ControllerManager) waitHealthy(port int, timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a readiness probe of a self-signed local process
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("kube-controller-manager exited before it was healthy (%v)", c.err)
		default:
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-controller-manager on %s: %w; its last output:\n%s", url, err, c.logs)
	}
	return nil
}

// Stop ends the process, with SIGTERM and after 30 seconds SIGKILL, waits
// for it to exit and removes its files. It is safe to call more than once.
func (c *ControllerManager) Stop() error {
	if c == nil {
		return nil
	}
	var err error
	c.stop.Do(func() {
		defer os.RemoveAll(c.dir)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
			err = fmt.Errorf("kube-controller-manager did not stop within 30s of SIGTERM; killed it")
		}
	})
	return err
}

// present fails, with what to do about it, unless the binary exists.
func present(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no %s in %s: run `make controlplane` (or `make test`, which does): %w",
			filepath.Base(path), filepath.Dir(path), err)
	}
	return nil
}

// FreePort asks the kernel for a free TCP port on loopback.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail keeps the last Size bytes written to it (4 KiB when zero), for
// error messages: a process's output, from its first whole line.
type Tail struct {
	Size int

	mu  sync.Mutex
	buf []byte
}

func (t *Tail) size() int {
	if t.Size > 0 {
		return t.Size
	}
	return 4 << 10
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.size(); over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := bytes.IndexByte(t.buf, '\n'); len(t.buf) == t.size() && i >= 0 {
		return string(t.buf[i+1:]) // from the first whole line
	}
	return string(t.buf)
}
