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
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// leaseNamespace holds kipam's leader election Lease and its pool Leases.
const leaseNamespace = "kipam-system"

// replica is one kipam process (bin/manager) with its own webhook, probe
// and metrics ports, kept running by a supervisor as a kubelet would: a
// replica that exits on its own (it lost leader election after being
// frozen, its API server was gone too long) is started again.
type replica struct {
	id          string
	webhookPort int
	probePort   int
	metricsPort int
	proc        *proc
}

// replicaSet is the three replicas.
type replicaSet struct {
	replicas []*replica
}

type replicaOptions struct {
	manager       string
	dir           string
	certDir       string
	orphanGrace   time.Duration
	leaseDuration time.Duration
}

func newReplica(o replicaOptions, id, kubeconfig string, ports []int) *replica {
	r := &replica{id: id, webhookPort: ports[0], probePort: ports[1], metricsPort: ports[2]}
	r.proc = &proc{name: "kipam " + id, path: o.manager, log: filepath.Join(o.dir, "kipam-"+id+".log"),
		args: []string{
			"--kubeconfig", kubeconfig,
			"--webhook-host", "127.0.0.1", "--webhook-port", fmt.Sprint(r.webhookPort), "--webhook-cert-dir", o.certDir,
			"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", r.probePort),
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", r.metricsPort), "--metrics-secure=false",
			"--leader-elect", "--lease-namespace", leaseNamespace, "--identity", id,
			"--advertise-address", fmt.Sprintf("127.0.0.1:%d", r.webhookPort),
			"--orphan-grace", o.orphanGrace.String(),
			"--pool-lease-duration", o.leaseDuration.String(),
			// Milliseconds, to line kipam's log up with the harness's.
			"--zap-time-encoding", "rfc3339nano",
		},
		ready: httpReady(&http.Client{Timeout: 2 * time.Second}, fmt.Sprintf("http://127.0.0.1:%d/readyz", r.probePort)),
	}
	return r
}

func (r *replica) webhookAddr() string { return fmt.Sprintf("127.0.0.1:%d", r.webhookPort) }

// down takes r down with how ("term": SIGTERM, else SIGKILL) and keeps the
// supervisor from starting it again until up.
func (r *replica) down(how string) {
	r.proc.held.Store(true)
	if how == "term" {
		r.proc.terminate(30 * time.Second)
	} else {
		r.proc.kill()
	}
}

// up starts r again, waiting until it is ready, and hands it back to the
// supervisor.
func (r *replica) up(ctx context.Context) error {
	defer r.proc.held.Store(false)
	if r.proc.running() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return r.proc.start(sctx)
}

// waitReady waits until every replica runs, is not stopped and answers
// its readiness probe.
func (s *replicaSet) waitReady(ctx context.Context) error {
	for _, r := range s.replicas {
		err := poll(ctx, 500*time.Millisecond, func(ctx context.Context) error {
			if r.proc.isStopped() || !r.proc.running() {
				return fmt.Errorf("replica %s is not running", r.id)
			}
			return r.proc.ready(ctx)
		})
		if err != nil {
			return fmt.Errorf("replica %s: %w", r.id, err)
		}
	}
	return nil
}

func (s *replicaSet) byID(id string) *replica {
	for _, r := range s.replicas {
		if r.id == id {
			return r
		}
	}
	return nil
}

// lastError is the last line of a process's output that reads like an
// error (a Go stack trace's frames are not), else its last line.
func lastError(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if strings.Contains(l, "ERROR") || strings.Contains(l, "error") || strings.HasPrefix(l, "E") || strings.HasPrefix(l, "F") {
			if len(l) > 300 {
				l = l[:300] + "..."
			}
			return l
		}
	}
	return lastLine(s)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
