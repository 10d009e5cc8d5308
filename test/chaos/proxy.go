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
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// lbProxy is a round-robin TCP proxy in front of the replicas' webhook
// ports, standing in for the Service the webhook configuration names. A
// backend that refuses the connection (a dead replica) is skipped; a
// stopped one accepts and never answers, as a frozen pod behind a Service
// would until its readiness probe failed.
type lbProxy struct {
	l        net.Listener
	backends []string
	next     atomic.Uint64
	conns    sync.WaitGroup
}

func newLBProxy(backends []string) (*lbProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &lbProxy{l: l, backends: backends}
	go p.serve()
	return p, nil
}

func (p *lbProxy) addr() string { return p.l.Addr().String() }

func (p *lbProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *lbProxy) handle(c net.Conn) {
	defer c.Close()
	start := p.next.Add(1)
	var b net.Conn
	for i := range len(p.backends) {
		addr := p.backends[(int(start)+i)%len(p.backends)]
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if b == nil {
		return // no live backend: the API server sees the connection close
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); closeWrite(b); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *lbProxy) close() { _ = p.l.Close() }

// apiProxy is a TLS-terminating reverse proxy in front of kube-apiserver
// for one replica (its kubeconfig names the proxy). While armed it makes
// writes to IPLedgers ambiguous: the write goes through to the API server,
// and then the answer is dropped (the connection or stream is reset) or
// held back for a while. kipam then has stored a ledger it was not told
// of, the "outcome is unknown" case of design.md.
type apiProxy struct {
	srv      *http.Server
	l        net.Listener
	upstream *url.URL
	rt       http.RoundTripper
	rp       *httputil.ReverseProxy

	mu     sync.Mutex
	armed  bool
	share  float64 // of ledger writes made ambiguous
	rng    *rand.Rand
	counts map[string]int // "dropped", "delayed", "passed" ledger writes while armed
	onHit  func(action string)
}

// newAPIProxy serves TLS with servingCrt/Key, forwarding to upstream as
// the user whose certificate is clientCrt/Key.
func newAPIProxy(upstream string, p *pki, servingCrt, servingKey string, client *user, seed uint64, errors io.Writer) (*apiProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(client.crt, client.key)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.cert)
	rt := &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	serving, err := tls.LoadX509KeyPair(servingCrt, servingKey)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ap := &apiProxy{l: l, upstream: u, rt: rt, rng: rand.New(rand.NewPCG(seed, 0xa9)), counts: map[string]int{}}
	ap.rp = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = u.Host },
		Transport:     rt,
		FlushInterval: -1, // watches stream
		ErrorLog:      log.New(errors, "api-proxy: ", log.LstdFlags|log.Lmicroseconds),
	}
	ap.srv = &http.Server{Handler: ap, ReadHeaderTimeout: 30 * time.Second, ErrorLog: ap.rp.ErrorLog,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}}
	go func() { _ = ap.srv.ServeTLS(l, "", "") }()
	return ap, nil
}

func (ap *apiProxy) url() string { return "https://" + ap.l.Addr().String() }

// arm makes share of ledger writes ambiguous from now on; disarm stops it.
func (ap *apiProxy) arm(share float64) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	ap.armed, ap.share = true, share
}

func (ap *apiProxy) disarm() {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	ap.armed = false
}

// decide returns what to do with a ledger write: "pass", "drop" or a delay.
func (ap *apiProxy) decide() (string, time.Duration) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	if !ap.armed || ap.rng.Float64() >= ap.share {
		return "pass", 0
	}
	if ap.rng.IntN(2) == 0 {
		return "drop", 0
	}
	// Up to 20 s: past the admission request's deadline (the webhook's
	// 15 s) for some, so that kipam's own request context gives up first.
	return "delay", time.Duration(500+ap.rng.IntN(19500)) * time.Millisecond
}

func (ap *apiProxy) count(action string) {
	ap.mu.Lock()
	ap.counts[action]++
	hit := ap.onHit
	ap.mu.Unlock()
	if hit != nil {
		hit(action)
	}
}

func (ap *apiProxy) snapshot() map[string]int {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	out := map[string]int{}
	for k, v := range ap.counts {
		out[k] = v
	}
	return out
}

func ledgerWrite(r *http.Request) bool {
	return (r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodPatch) &&
		strings.Contains(r.URL.Path, "/apis/ipam.kipam.dev/") && strings.Contains(r.URL.Path, "/ipledgers")
}

func (ap *apiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !ledgerWrite(r) {
		ap.rp.ServeHTTP(w, r)
		return
	}
	action, delay := ap.decide()
	if action == "pass" {
		ap.rp.ServeHTTP(w, r)
		return
	}
	// Send the write and read the whole answer first: it went through.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = ap.upstream.Scheme, ap.upstream.Host, ap.upstream.Host
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	resp, err := ap.rt.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if resp.StatusCode >= 300 {
		// A refused write is not ambiguous: pass the refusal on.
		ap.count("passed (refused upstream)")
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(answer)
		return
	}
	switch action {
	case "drop":
		ap.count("dropped")
		panic(http.ErrAbortHandler) // resets the stream (HTTP/2) or closes the connection
	case "delay":
		ap.count("delayed")
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return // the client gave up first: it never learns the outcome
		}
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

func (ap *apiProxy) close() { _ = ap.srv.Close() }

func (ap *apiProxy) String() string { return fmt.Sprintf("api proxy %s -> %s", ap.url(), ap.upstream) }
