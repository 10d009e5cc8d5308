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

package v1alpha1

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/testenv"
	"github.com/kipam/kipam/internal/testenv/kipamtest"
)

var (
	ctx       context.Context
	cancel    context.CancelFunc
	k8sClient client.Client
	cfg       *rest.Config
	testEnv   *envtest.Environment
	kcm       *testenv.ControllerManager
	scheme    = runtime.NewScheme()
	// pools is the Manager of the running kipam; startKipam replaces it.
	pools *ipam.Manager
	// stopKipam stops the running kipam.
	stopKipam func()
)

// orphanGrace is short here so that the leak tests need no long wait; the
// default is two minutes. It must still outlast the slowest create the
// specs make, from kipam's commit to the API server storing the object (the
// sweep would release a prefix whose claim or pool is still being stored):
// 500 concurrent creates on two cores took more than 3 s, and more than 8 s
// at a load average of 20. The sweep counts it from its informer's first
// sight of an entry, moments after the commit (it once counted from its
// own first reconcile of the ledger, which a backlog delayed: slack this
// grace no longer has).
const orphanGrace = 20 * time.Second

// clockSkew moves the controllers' clock forward, so that lifetimes expire
// without waiting for them.
var clockSkew atomic.Int64

func suiteNow() time.Time { return time.Now().Add(time.Duration(clockSkew.Load())) }

func TestWebhooks(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Webhook and allocation Suite")
}

var _ = BeforeSuite(func() {
	// The suite shares 2 cores with etcd, kube-apiserver and
	// kube-controller-manager, and under -coverpkg a reconcile can take
	// longer than Gomega's default second.
	SetDefaultEventuallyTimeout(10 * time.Second)
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(false)))
	ctx, cancel = context.WithCancel(context.TODO())

	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(ipamv1alpha1.AddToScheme(scheme)).To(Succeed())
	Expect(capiv1beta2.AddToScheme(scheme)).To(Succeed())

	var err error
	testEnv, err = testenv.New(true)
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	// The garbage collector and the namespace controller, which delete
	// claims for their owners and namespaces.
	kcm, err = testenv.StartControllerManager(testEnv, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	stopKipam = startKipam()
})

var _ = AfterSuite(func() {
	if stopKipam != nil {
		stopKipam()
	}
	cancel()
	err := kcm.Stop()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
	Expect(err).NotTo(HaveOccurred())
})

// startKipam starts kipam as cmd/main.go does: one controller manager with
// the webhook server and every controller, on a fresh ipam.Manager that
// knows nothing but what the API server holds. It points pools at the new
// Manager and returns a func that stops kipam and waits until it is down,
// its webhook listener closed, so that a new one can bind the same port.
func startKipam() (stop func()) {
	GinkgoHelper()
	k, err := kipamtest.Start(ctx, testEnv, cfg, scheme, SetupWithManager,
		controller.Options{OrphanGrace: orphanGrace, Now: suiteNow, LeaseNamespace: "default"})
	Expect(err).NotTo(HaveOccurred())
	pools = k.Manager
	return func() {
		GinkgoHelper()
		Expect(k.Stop()).To(Succeed())
	}
}
