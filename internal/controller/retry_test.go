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
	"context"
	"errors"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// The chaos suite's fail-releases fault held releases up to 1m41s after
// its window closed: controller-runtime's default limiter doubles an
// object's retry delay up to 1000 s, so the longer a release kept failing,
// the longer it waited once it could go through.
var _ = Describe("Retries of a failing release", func() {
	It("come within RetryMaxDelay of the last failure, however long the release kept failing", func() {
		const maxDelay = time.Second
		name := uniqueName("retry")
		var (
			mu       sync.Mutex
			failing  = true
			attempts []time.Time // of removing the allocation's finalizer
			failed   int         // how many of them failed
		)
		startKipam(Options{OrphanGrace: time.Hour, RetryMaxDelay: maxDelay}, func(mo *ctrl.Options) {
			mo.NewClient = func(cfg *rest.Config, o client.Options) (client.Client, error) {
				c, err := client.NewWithWatch(cfg, o)
				if err != nil {
					return nil, err
				}
				return interceptor.NewClient(c, interceptor.Funcs{
					Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
						if _, ok := obj.(*ipamv1alpha1.IPAllocation); ok && obj.GetName() == name {
							mu.Lock()
							attempts = append(attempts, time.Now())
							fail := failing
							if fail {
								failed++
							}
							mu.Unlock()
							if fail {
								return apierrors.NewInternalError(errors.New("injected: the release is refused for now"))
							}
						}
						return c.Patch(ctx, obj, patch, opts...)
					},
				}), nil
			}
		})

		By("deleting an allocation whose claim is gone, whose finalizer's removal fails")
		a := &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{ipamv1alpha1.AllocationFinalizer}},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: "gone", CIDR: "10.99.0.0/24", Entry: "e",
				ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "gone"}},
		}
		Expect(k8sClient.Create(ctx, a)).To(Succeed())
		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		span := func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			if len(attempts) == 0 {
				return 0
			}
			return attempts[len(attempts)-1].Sub(attempts[0])
		}
		// Eight seconds of failures: controller-runtime's default would
		// now wait about as long again before the next attempt.
		Eventually(span).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).Should(BeNumerically(">=", 8*time.Second))

		By("letting the release through")
		mu.Lock()
		failing = false
		mu.Unlock()
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(a), a))
		}).WithTimeout(2 * time.Minute).Should(BeTrue())

		mu.Lock()
		defer mu.Unlock()
		Expect(len(attempts)).To(BeNumerically(">", failed), "the release went through without removing the finalizer")
		wait := attempts[failed].Sub(attempts[failed-1])
		Expect(wait).To(BeNumerically("<", maxDelay+2*time.Second),
			"after %d failures over %s, the release was retried only %s after the last one", failed, attempts[failed-1].Sub(attempts[0]), wait)
	})
})

// startKipam starts kipam's controllers, with opts, on the suite's API
// server, as cmd/main.go sets up the manager (mutate changes that), and
// stops them after the spec, or when the spec calls what it returns.
func startKipam(opts Options, mutate func(*ctrl.Options)) (stop func()) {
	GinkgoHelper()
	o := ctrl.Options{
		Scheme:                 scheme.Scheme,
		Cache:                  CacheOptions(),
		Client:                 ClientOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if mutate != nil {
		mutate(&o)
	}
	mgr, err := ctrl.NewManager(cfg, o)
	Expect(err).NotTo(HaveOccurred())
	m := ipam.NewManager(ipam.ClientStore{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient()}, nil)
	Expect(SetupWithManager(ctx, mgr, m, opts)).To(Succeed())
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	stop = func() {
		cancel()
		Eventually(done).WithTimeout(time.Minute).Should(BeClosed())
	}
	DeferCleanup(stop)
	return stop
}
