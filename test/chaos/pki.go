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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pki is the one CA of a chaos run: it signs the API server's serving
// certificate, every client certificate (the API server trusts it as its
// client CA), the webhook serving certificate the replicas share, and the
// ambiguous-write proxy's. Everything is written under dir, so that a
// restarted process finds the same files.
type pki struct {
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caPEM  []byte
	serial int64
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kipam-chaos-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, cert: cert, key: key, serial: 1,
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	return p, os.WriteFile(p.caFile(), p.caPEM, 0o600)
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// issue signs a key pair: a serving certificate for 127.0.0.1 and
// localhost when server is set, else a client certificate for user in
// groups. It returns the PEM of both.
func (p *pki) issue(server bool, user string, groups ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// writePair issues a pair and writes it as <dir>/<name>.crt and .key (or
// tls.crt and tls.key in dir when name is ""), returning their paths.
func (p *pki) writePair(dir, name string, server bool, user string, groups ...string) (crt, key string, err error) {
	certPEM, keyPEM, err := p.issue(server, user, groups...)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	crt, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if name == "" {
		crt, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	}
	if err := os.WriteFile(crt, certPEM, 0o600); err != nil {
		return "", "", err
	}
	return crt, key, os.WriteFile(key, keyPEM, 0o600)
}

// serviceAccountKeys writes the key pair the API server signs
// service-account tokens with.
func (p *pki) serviceAccountKeys() (pub, priv string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	pub, priv = filepath.Join(p.dir, "sa.pub"), filepath.Join(p.dir, "sa.key")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return "", "", err
	}
	return pub, priv, os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// user is a client identity: a certificate in system:masters and a
// kubeconfig for a given server.
type user struct {
	name       string
	crt, key   string
	kubeconfig string
}

// newUser issues name a client certificate in system:masters and writes a
// kubeconfig that reaches server (https://host:port) with it.
func (p *pki) newUser(name, server string) (*user, error) {
	dir := filepath.Join(p.dir, "users")
	crt, key, err := p.writePair(dir, name, false, name, "system:masters")
	if err != nil {
		return nil, err
	}
	u := &user{name: name, crt: crt, key: key, kubeconfig: filepath.Join(dir, name+".kubeconfig")}
	return u, writeKubeconfig(u.kubeconfig, server, p.caFile(), crt, key)
}

func writeKubeconfig(path, server, ca, crt, key string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["chaos"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos["chaos"] = &clientcmdapi.AuthInfo{ClientCertificate: crt, ClientKey: key}
	cfg.Contexts["chaos"] = &clientcmdapi.Context{Cluster: "chaos", AuthInfo: "chaos"}
	cfg.CurrentContext = "chaos"
	return clientcmd.WriteToFile(*cfg, path)
}

// restConfig is the user's client configuration.
func (u *user) restConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", u.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u.kubeconfig, err)
	}
	return cfg, nil
}
