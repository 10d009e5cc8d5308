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

package ipam

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/metrics"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// ForwardPath is where a pool's owner takes changes forwarded by other
// replicas, on its webhook server.
const ForwardPath = "/kipam/v1alpha1/forward"

// wireOp is one change sent to a pool's owner.
type wireOp struct {
	Pool   *ipamv1alpha1.IPPool `json:"pool"`
	Bits   int                  `json:"bits,omitempty"`
	CIDR   string               `json:"cidr,omitempty"`
	Holder string               `json:"holder,omitempty"`
	ID     string               `json:"id,omitempty"`
	Adopt  bool                 `json:"adopt,omitempty"`
	// AdoptKnown: an owner of an earlier release ignores it, and commits
	// a new entry, which its caller releases as a second one.
	AdoptKnown bool       `json:"adoptKnown,omitempty"`
	Reclaim    bool       `json:"reclaim,omitempty"`
	DryRun     bool       `json:"dryRun,omitempty"`
	Fresh      bool       `json:"fresh,omitempty"`
	Release    string     `json:"release,omitempty"`
	GraceMS    int64      `json:"graceMS,omitempty"`
	Expect     *wireEntry `json:"expect,omitempty"`
	Drain      bool       `json:"drain,omitempty"`
	// Sticky is a request's identity (Request.Sticky); Retain, what a
	// release keeps for its claim's identity.
	Sticky *Identity `json:"sticky,omitempty"`
	Retain *Retain   `json:"retain,omitempty"`
}

type wireEntry struct {
	Holder string `json:"holder"`
	ID     string `json:"id,omitempty"`
	// At is the entry's time in Unix seconds, when the release names it.
	At int64 `json:"at,omitempty"`
}

// wireResult is the owner's answer. Err carries an error with what the
// caller needs to tell its kind apart: the allocator's reason, the prefix,
// exhaustion's figures, or busy.
type wireResult struct {
	CIDR string `json:"cidr,omitempty"`
	// ID is the ID of the entry a Reclaim request took over.
	ID string `json:"id,omitempty"`
	// At is the time, in unix seconds, of the entry the change committed
	// or renewed (0: none, or an owner from before it was sent).
	At  int64    `json:"at,omitempty"`
	Err *wireErr `json:"err,omitempty"`
}

type wireErr struct {
	Message     string `json:"message"`
	Reason      string `json:"reason,omitempty"`
	Prefix      string `json:"prefix,omitempty"`
	Bits        int    `json:"bits,omitempty"`
	LargestFree int    `json:"largestFree,omitempty"`
	Allocations int    `json:"allocations,omitempty"`
	Claims      int    `json:"claims,omitempty"`
	Pools       int    `json:"pools,omitempty"`
	// Retained is the line that keeps the prefix a request was refused.
	Retained *wireRetained `json:"retained,omitempty"`
}

type wireRetained struct {
	Prefix    string    `json:"prefix"`
	Namespace string    `json:"namespace"`
	Identity  string    `json:"identity"`
	Until     time.Time `json:"until"`
}

// reasons are the errors that cross the wire by name.
var reasons = map[string]error{
	"OutsidePool": allocator.ErrOutsidePool, "Overlap": allocator.ErrOverlap, "Reserved": allocator.ErrReserved,
	"NotCanonical": allocator.ErrNotCanonical, "WrongFamily": allocator.ErrWrongFamily, "NotAllocated": allocator.ErrNotAllocated,
	"InvalidLength": allocator.ErrInvalidLength, "Held": allocator.ErrHeld, "Busy": ErrBusy,
	"LedgerFull": ErrLedgerFull, "NamespaceLimit": ErrNamespaceLimit, "PoolDeleted": ErrPoolDeleted,
}

func encodeErr(err error) *wireErr {
	if err == nil {
		return nil
	}
	w := &wireErr{Message: err.Error()}
	var kept *RetainedError
	if errors.As(err, &kept) {
		w.Retained = &wireRetained{Prefix: kept.Prefix.String(), Namespace: kept.Release.Namespace, Identity: kept.Release.Identity, Until: kept.Release.Until}
		err = kept.Err
	}
	var ex *allocator.ExhaustedError
	if errors.As(err, &ex) {
		w.Reason, w.Bits, w.LargestFree = "Exhausted", ex.Bits, ex.LargestFree
		return w
	}
	var ne *NotEmptyError
	if errors.As(err, &ne) {
		w.Reason, w.Allocations, w.Claims, w.Pools = "NotEmpty", ne.Allocations, ne.Claims, ne.Pools
		return w
	}
	for name, sentinel := range reasons {
		if errors.Is(err, sentinel) {
			w.Reason = name
		}
	}
	var pe *allocator.PrefixError
	if errors.As(err, &pe) {
		w.Prefix = pe.Prefix.String()
	}
	return w
}

// remoteErr is an error as the owner reported it: its message, and the
// reason it wraps, so that errors.Is and errors.As work as on the owner.
type remoteErr struct {
	msg    string
	reason error
}

func (e *remoteErr) Error() string { return e.msg }
func (e *remoteErr) Unwrap() error { return e.reason }

func decodeErr(w *wireErr) error {
	if w == nil {
		return nil
	}
	if k := w.Retained; k != nil {
		inner := *w
		inner.Retained = nil
		p, _ := netip.ParsePrefix(k.Prefix)
		return &RetainedError{Prefix: p, Release: Release{Namespace: k.Namespace, Identity: k.Identity, Until: k.Until, Kept: true}, Err: decodeErr(&inner)}
	}
	if w.Reason == "Exhausted" {
		// The message may say more than the figures (the prefixes a pool
		// retains): keep it, and the error errors.As looks for.
		return &remoteErr{msg: w.Message, reason: &allocator.ExhaustedError{Bits: w.Bits, LargestFree: w.LargestFree}}
	}
	if w.Reason == "NotEmpty" {
		return &NotEmptyError{Allocations: w.Allocations, Claims: w.Claims, Pools: w.Pools}
	}
	reason := reasons[w.Reason]
	if p, err := netip.ParsePrefix(w.Prefix); err == nil && reason != nil {
		return &allocator.PrefixError{Prefix: p, Err: reason}
	}
	return &remoteErr{msg: w.Message, reason: reason}
}

// Router sends changes to the replica that owns each pool.
type Router struct {
	*Owners
	// CertDir holds the webhook server's tls.crt and tls.key, which every
	// replica shares: replicas present it to each other and accept only it.
	CertDir string
	client  *http.Client
}

// NewRouter returns a Router on owners, authenticating with the key pair
// in certDir.
func NewRouter(owners *Owners, certDir string) *Router {
	r := &Router{Owners: owners, CertDir: certDir}
	r.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := r.keyPair()
				return &c, err
			},
			// Peers are pinned to the shared certificate instead of a CA:
			// the serving certificate names the Service, not the pod.
			InsecureSkipVerify: true, //nolint:gosec // verified by VerifyPeerCertificate
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				return r.verify(raw)
			},
		}},
	}
	return r
}

func (r *Router) keyPair() (tls.Certificate, error) {
	return tls.LoadX509KeyPair(filepath.Join(r.CertDir, "tls.crt"), filepath.Join(r.CertDir, "tls.key"))
}

// verify accepts only a peer presenting this replica's own certificate.
func (r *Router) verify(raw [][]byte) error {
	own, err := r.keyPair()
	if err != nil {
		return err
	}
	if len(raw) == 0 || len(own.Certificate) == 0 || !bytes.Equal(raw[0], own.Certificate[0]) {
		return errors.New("peer does not present kipam's serving certificate")
	}
	return nil
}

// forward sends op to the replica at addr.
func (r *Router) forward(ctx context.Context, addr string, op *wireOp) (*wireResult, error) {
	body, err := json.Marshal(op)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+ForwardPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("owner at %s answered %s: %s", addr, resp.Status, msg)
	}
	var res wireResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Handler serves changes forwarded by other replicas, on m.
func (r *Router) Handler(m *Manager) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.TLS == nil || r.verify(rawCerts(req.TLS.PeerCertificates)) != nil {
			http.Error(w, "forwarding is for kipam's replicas only", http.StatusForbidden)
			return
		}
		var op wireOp
		if err := json.NewDecoder(io.LimitReader(req.Body, 1<<20)).Decode(&op); err != nil || op.Pool == nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		res := m.serve(req.Context(), &op)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

// remote has the owner of pool do o, when another replica owns it. It
// reports false when o is to be done here: this replica owns the pool, or
// the owner could not be reached (the ledger fences either way).
func (m *Manager) remote(ctx context.Context, r *Router, pool *ipamv1alpha1.IPPool, o *op) bool {
	addr := r.Owner(ctx, pool.Name)
	if addr == "" || addr == r.Address {
		return false
	}
	w := &wireOp{Pool: pool}
	switch {
	case o.alloc != nil:
		w.Bits, w.Holder, w.ID, w.Adopt, w.DryRun, w.Fresh = o.alloc.Bits, o.alloc.Holder, o.alloc.ID, o.alloc.Adopt, o.alloc.DryRun, o.alloc.Fresh
		w.Reclaim, w.AdoptKnown = o.alloc.Reclaim, o.alloc.AdoptKnown
		w.Sticky = o.alloc.Sticky
		if o.alloc.CIDR.IsValid() {
			w.CIDR = o.alloc.CIDR.String()
		}
	case o.drain:
		w.Drain = true
	default:
		w.Release, w.GraceMS = o.release.String(), o.grace.Milliseconds()
		w.Expect = &wireEntry{Holder: o.expect.Holder, ID: o.expect.ID}
		if !o.expect.At.IsZero() {
			w.Expect.At = o.expect.At.Unix()
		}
		w.Retain = o.retain
	}
	res, err := r.forward(ctx, addr, w)
	if err != nil {
		// Refused: nothing listens at the owner's address, so the owner
		// is gone; take its pool over now rather than when its Lease
		// lapses. Any other failure (a timeout, a reset answered by a
		// fresh connection) may be an owner that is alive and slow:
		// serve this one here, and leave the Lease to lapse or be renewed.
		took := refused(ctx, err, addr) && r.TakeOver(ctx, pool.Name, addr)
		logf.FromContext(ctx).Info("could not reach the pool's owner; serving here", "pool", pool.Name, "owner", addr, "tookOver", took, "err", err)
		metrics.Forwarded.WithLabelValues("Unreachable").Inc()
		return false
	}
	metrics.Forwarded.WithLabelValues("Forwarded").Inc()
	o.err = decodeErr(res.Err)
	if res.CIDR != "" {
		o.result, _ = netip.ParsePrefix(res.CIDR)
	}
	o.id = res.ID
	if res.At != 0 {
		o.at = time.Unix(res.At, 0)
	}
	return true
}

// refused reports whether nothing listens at addr, the owner's address,
// which a forward failed with err: refused outright, or a connection kept
// from an earlier forward ended (EOF, a reset) and a fresh one is
// refused. A kept connection fails so when its owner has exited, and the
// first change after that would otherwise be served here without the
// pool taken over: the next one would be (a webhook spec saw this under
// load).
func refused(ctx context.Context, err error, addr string) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
		return false
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	_ = c.Close()
	return false
}

// serve does a forwarded change here.
func (m *Manager) serve(ctx context.Context, w *wireOp) *wireResult {
	logf.FromContext(ctx).V(1).Info("serving a change forwarded by another replica", "pool", w.Pool.Name, "release", w.Release, "bits", w.Bits, "cidr", w.CIDR)
	o := &op{done: make(chan struct{})}
	switch {
	case w.Drain:
		o.drain = true
	case w.Release != "":
		p, err := netip.ParsePrefix(w.Release)
		if err != nil {
			return &wireResult{Err: encodeErr(err)}
		}
		o.release, o.grace = p, time.Duration(w.GraceMS)*time.Millisecond
		if w.Expect == nil {
			return &wireResult{Err: encodeErr(errors.New("a release must name the entry it frees"))}
		}
		o.expect = Entry{Holder: w.Expect.Holder, ID: w.Expect.ID}
		if w.Expect.At != 0 {
			o.expect.At = time.Unix(w.Expect.At, 0)
		}
		o.retain = w.Retain
	default:
		req := &Request{Pool: w.Pool, Bits: w.Bits, Holder: w.Holder, ID: w.ID, Adopt: w.Adopt, AdoptKnown: w.AdoptKnown, Reclaim: w.Reclaim, DryRun: w.DryRun, Fresh: w.Fresh, Sticky: w.Sticky}
		if w.CIDR != "" {
			p, err := netip.ParsePrefix(w.CIDR)
			if err != nil {
				return &wireResult{Err: encodeErr(err)}
			}
			req.CIDR = p
		}
		o.alloc = req
	}
	if err := m.submitLocal(ctx, w.Pool, o); err != nil {
		return &wireResult{Err: encodeErr(err)}
	}
	res := &wireResult{Err: encodeErr(o.err), ID: o.id}
	if !o.at.IsZero() {
		res.At = o.at.Unix()
	}
	if o.result.IsValid() {
		res.CIDR = o.result.String()
	}
	return res
}
