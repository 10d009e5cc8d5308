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
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/kipam/kipam/internal/testenv"
)

// controlPlane is etcd, kube-apiserver and kube-controller-manager (its
// garbage collector and namespace controller) run as plain processes, not
// through envtest: envtest's Etcd and APIServer can be stopped and started
// again on fixed ports and directories, but only with SIGTERM, and its
// client CA and users are kept in memory. Here each process can be
// SIGKILLed and started again with the same flags, ports, data and
// certificates, which is what a restart fault needs.
type controlPlane struct {
	etcd, apiserver, kcm *proc
	etcdURL              string
	apiURL               string // https://127.0.0.1:<port>
	admin                *user
	pki                  *pki
}

// startControlPlane starts the three processes with their state under dir.
func startControlPlane(ctx context.Context, assets, dir string, p *pki) (*controlPlane, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kcmPort := ports[0], ports[1], ports[2], ports[3]
	cp := &controlPlane{pki: p,
		etcdURL: fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		apiURL:  fmt.Sprintf("https://127.0.0.1:%d", apiPort)}

	// etcd. It does not fsync (as envtest runs it): a SIGKILL of the process
	// loses nothing the kernel has, and this machine is shared.
	cp.etcd = &proc{name: "etcd", path: filepath.Join(assets, "etcd"), log: filepath.Join(dir, "etcd.log"),
		args: []string{
			"--data-dir=" + filepath.Join(dir, "etcd-data"),
			"--listen-client-urls=" + cp.etcdURL,
			"--advertise-client-urls=" + cp.etcdURL,
			fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
			fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
			fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", peerPort),
			"--unsafe-no-fsync=true",
		},
		ready: httpReady(&http.Client{Timeout: 2 * time.Second}, cp.etcdURL+"/health"),
	}

	// kube-apiserver.
	certDir := filepath.Join(dir, "apiserver")
	servingCrt, servingKey, err := p.writePair(certDir, "serving", true, "kube-apiserver")
	if err != nil {
		return nil, err
	}
	saPub, saKey, err := p.serviceAccountKeys()
	if err != nil {
		return nil, err
	}
	cp.admin, err = p.newUser("chaos-admin", cp.apiURL)
	if err != nil {
		return nil, err
	}
	adminHTTP, err := cp.admin.httpClient(p)
	if err != nil {
		return nil, err
	}
	cp.apiserver = &proc{name: "kube-apiserver", path: filepath.Join(assets, "kube-apiserver"), log: filepath.Join(dir, "kube-apiserver.log"),
		args: []string{
			"--etcd-servers=" + cp.etcdURL,
			"--cert-dir=" + certDir,
			"--tls-cert-file=" + servingCrt,
			"--tls-private-key-file=" + servingKey,
			"--client-ca-file=" + p.caFile(),
			fmt.Sprintf("--secure-port=%d", apiPort),
			"--bind-address=127.0.0.1",
			"--endpoint-reconciler-type=none",
			"--service-account-key-file=" + saPub,
			"--service-account-signing-key-file=" + saKey,
			"--service-account-issuer=" + cp.apiURL,
			"--service-cluster-ip-range=10.0.0.0/24",
			"--authorization-mode=RBAC",
			"--disable-admission-plugins=ServiceAccount",
			"--allow-privileged=true",
		},
		ready: httpReady(adminHTTP, cp.apiURL+"/readyz"),
	}

	// kube-controller-manager: the garbage collector deletes a deleted
	// pool's ledgers, as in a cluster.
	kcmUser, err := p.newUser("chaos-controller-manager", cp.apiURL)
	if err != nil {
		return nil, err
	}
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the readiness probe of a local process
	}}
	cp.kcm = &proc{name: "kube-controller-manager", path: filepath.Join(assets, "kube-controller-manager"),
		log: filepath.Join(dir, "kube-controller-manager.log"),
		args: []string{
			"--kubeconfig=" + kcmUser.kubeconfig,
			"--controllers=" + strings.Join(testenv.Controllers, ","),
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", kcmPort),
			"--cert-dir=" + filepath.Join(dir, "kcm-certs"),
			"--kube-api-qps=200",
			"--kube-api-burst=400",
		},
		ready: httpReady(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort)),
	}

	for _, pr := range []*proc{cp.etcd, cp.apiserver, cp.kcm} {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		err := pr.start(sctx)
		cancel()
		if err != nil {
			cp.stop()
			return nil, err
		}
	}
	return cp, nil
}

// stop ends the processes, kube-controller-manager first.
func (cp *controlPlane) stop() {
	for _, pr := range []*proc{cp.kcm, cp.apiserver, cp.etcd} {
		if pr != nil && pr.running() {
			pr.terminate(20 * time.Second)
		}
	}
}

// httpClient is an HTTP client that presents the user's certificate and
// trusts the run's CA.
func (u *user) httpClient(p *pki) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(u.crt, u.key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

// httpReady is a readiness check: a GET of url answering 200.
func httpReady(c *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
		}
		return nil
	}
}

// freePorts picks n distinct free ports on loopback.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		port, err := testenv.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[port] {
			seen[port] = true
			out = append(out, port)
		}
	}
	return out, nil
}
