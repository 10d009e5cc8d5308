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

package controller

import (
	"net/http"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// TestAPILimits checks what each setting of --kube-api-qps and
// --kube-api-burst leaves in the REST clients controller-runtime makes
// from the config: no limiter at all by default, else a token bucket that
// lets burst requests through at once and no more.
func TestAPILimits(t *testing.T) {
	for _, tc := range []struct {
		name      string
		qps       float32
		burst     int
		wantQPS   float32 // 0: no limiter
		wantBurst int
		err       string
	}{
		{name: "default: none", qps: 0, burst: 0},
		{name: "qps and burst", qps: 0.001, burst: 3, wantQPS: 0.001, wantBurst: 3},
		{name: "burst twice qps", qps: 20, wantQPS: 20, wantBurst: 40},
		{name: "burst at least one", qps: 0.001, wantQPS: 0.001, wantBurst: 1},
		{name: "burst rounded up", qps: 2.5, wantQPS: 2.5, wantBurst: 5},
		{name: "negative qps", qps: -1, err: "--kube-api-qps must be 0 (no client-side limit) or more, not -1"},
		{name: "negative burst", qps: 5, burst: -2, err: "--kube-api-burst must be 0 (twice --kube-api-qps) or more, not -2"},
		{name: "burst without qps", burst: 10, err: "--kube-api-burst=10 limits nothing without --kube-api-qps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// What a kubeconfig leaves unset, as client-go reads it: 5 a
			// second, 10 at once.
			cfg := &rest.Config{Host: "https://127.0.0.1:6443"}
			err := APILimits(cfg, tc.qps, tc.burst)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("APILimits(%v, %d) = %v, want %q", tc.qps, tc.burst, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rc, err := apiutil.RESTClientForGVK(schema.GroupVersionKind{Group: "ipam.kipam.dev", Version: "v1alpha1", Kind: "IPClaim"},
				false, false, cfg, scheme.Codecs, http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			limiter := rc.(*rest.RESTClient).GetRateLimiter()
			// The pool Leases' client never has one.
			leases, err := apiutil.RESTClientForGVK(schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"},
				false, false, WithoutAPILimits(cfg), scheme.Codecs, http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			if l := leases.(*rest.RESTClient).GetRateLimiter(); l != nil {
				t.Errorf("the pool Leases' client has a limiter of %v a second, want none", l.QPS())
			}
			if tc.wantQPS == 0 {
				if limiter != nil {
					t.Fatalf("a limiter of %v a second, want none", limiter.QPS())
				}
				return
			}
			if limiter == nil {
				t.Fatal("no limiter")
			}
			if limiter.QPS() != tc.wantQPS {
				t.Errorf("QPS %v, want %v", limiter.QPS(), tc.wantQPS)
			}
			// At 0.001 a second no token comes back within the test.
			if tc.wantQPS < 0.01 {
				for i := range tc.wantBurst {
					if !limiter.TryAccept() {
						t.Fatalf("request %d of a burst of %d refused", i+1, tc.wantBurst)
					}
				}
				if limiter.TryAccept() {
					t.Fatalf("request %d let through past a burst of %d", tc.wantBurst+1, tc.wantBurst)
				}
			} else if cfg.Burst != tc.wantBurst {
				t.Errorf("burst %d, want %d", cfg.Burst, tc.wantBurst)
			}
		})
	}
}
