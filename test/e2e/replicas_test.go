//go:build e2e

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

package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kipam/kipam/internal/testenv"
)

// clusterEnv reads the local cluster's env file (kubeconfig, webhook
// address and certificates).
func clusterEnv() map[string]string {
	GinkgoHelper()
	f, err := os.Open(filepath.Join(demoDir, "cluster", "env"))
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = f.Close() }()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// startReplica runs a second kipam process on the demo cluster, as a
// standby behind the demo's (which holds leader election), and returns the
// address it takes forwarded changes on, its log file and a func that
// kills it.
func startReplica(identity string) (addr, logFile string, kill func()) {
	GinkgoHelper()
	// The ports are free when picked, but another process may take one
	// before kipam binds it: then kipam exits, and it is started again on
	// other ports.
	for attempt := 1; ; attempt++ {
		addr, logFile, kill, err := tryReplica(identity)
		if err == nil {
			return addr, logFile, kill
		}
		if attempt == 3 {
			Fail(err.Error())
		}
	}
}

// tryReplica starts the replica once; see startReplica.
func tryReplica(identity string) (addr, logFile string, kill func(), err error) {
	GinkgoHelper()
	env := clusterEnv()
	port, err := testenv.FreePort()
	Expect(err).NotTo(HaveOccurred())
	probe, err := testenv.FreePort()
	Expect(err).NotTo(HaveOccurred())
	logFile = filepath.Join(demoDir, identity+".log")
	out, err := os.Create(logFile)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(filepath.Join(root, "bin", "manager"), "--kubeconfig", env["KUBECONFIG"],
		"--webhook-host", "127.0.0.1", "--webhook-port", fmt.Sprint(port), "--webhook-cert-dir", env["WEBHOOK_CERT_DIR"],
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probe), "--metrics-bind-address", "0",
		"--leader-elect", "--lease-namespace", "default", "--identity", identity,
		"--advertise-address", fmt.Sprintf("127.0.0.1:%d", port), "--zap-log-level", "debug")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	kill = sync.OnceFunc(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = out.Close()
	})
	ready := func() (int, error) {
		select {
		case <-exited:
			return 0, StopTrying(fmt.Sprintf("kipam exited: %v", waitErr))
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe))
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	var failure string
	g := NewGomega(func(message string, _ ...int) { failure = message })
	if !g.Eventually(ready).WithTimeout(time.Minute).Should(Equal(http.StatusOK)) {
		log, _ := os.ReadFile(logFile)
		kill()
		return "", "", nil, fmt.Errorf("kipam %s did not get ready: %s; its log ends:\n%s", identity, failure, tail(string(log), 2000))
	}
	DeferCleanup(kill)
	return fmt.Sprintf("127.0.0.1:%d", port), logFile, kill, nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var _ = Describe("kipam with two replicas", func() {
	It("serves each pool on the replica holding its Lease, and on the other when that one dies", func() {
		addr, logFile, kill := startReplica("e2e-b")

		By("handing the pool's Lease to the second replica, as if it had served the pool first")
		out, err := kIn(`apiVersion: ipam.kipam.dev/v1alpha1
kind: IPPool
metadata: {name: e2e-routed}
spec: {cidr: 192.168.90.0/28}
`, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		lease := fmt.Sprintf(`apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: kipam-pool-e2e-routed
  namespace: default
  annotations: {ipam.kipam.dev/address: "%s"}
spec:
  holderIdentity: e2e-b
  leaseDurationSeconds: 300
  renewTime: "%s"
`, addr, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"))
		out, err = kIn(lease, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)

		claim := func(name string) string {
			return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: default}\nspec: {pool: e2e-routed}\n", name)
		}
		By("creating claims through the API server, which calls the demo's replica")
		for i, want := range []string{"192.168.90.0/32", "192.168.90.1/32"} {
			out, err := kIn(claim(fmt.Sprintf("e2e-r%d", i)), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(Equal(want))
		}
		Expect(mustRead(logFile, "serving a change forwarded by another replica")).To(MatchRegexp(`"pool": ?"e2e-routed"`))
		out, err = k("get", "lease", "-n", "default", "kipam-pool-e2e-routed", "-o", "jsonpath={.spec.holderIdentity}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("e2e-b"))

		By("killing the owner while its Lease runs: the demo's replica serves the pool itself")
		kill()
		out, err = kIn(claim("e2e-r2"), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.90.2/32"))
		manager, err := os.ReadFile(filepath.Join(demoDir, "manager.log"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(manager)).To(ContainSubstring("could not reach the pool's owner; serving here"))

		for i := range 3 {
			out, err := k("delete", "ipclaim", "-n", "default", fmt.Sprintf("e2e-r%d", i))
			Expect(err).NotTo(HaveOccurred(), out)
		}
		out, err = k("delete", "ippool", "e2e-routed")
		Expect(err).NotTo(HaveOccurred(), out)
	})
})

// mustRead waits until file has a line containing s and returns that line.
func mustRead(file, s string) string {
	GinkgoHelper()
	var line string
	Eventually(func() bool {
		data, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		for l := range strings.Lines(string(data)) {
			if strings.Contains(l, s) {
				line = l
				return true
			}
		}
		return false
	}).WithTimeout(30*time.Second).Should(BeTrue(), "%s never logged %q", file, s)
	return line
}
