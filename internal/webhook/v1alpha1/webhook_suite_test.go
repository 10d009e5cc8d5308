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
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/testenv"
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
// 500 concurrent creates on two cores took more than 3 s.
const orphanGrace = 8 * time.Second

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
	wh := &testEnv.WebhookInstallOptions
	addr := net.JoinHostPort(wh.LocalServingHost, fmt.Sprint(wh.LocalServingPort))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache:  controller.CacheOptions(),
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wh.LocalServingHost,
			Port:    wh.LocalServingPort,
			CertDir: wh.LocalServingCertDir,
		}),
		LeaderElection: false,
		Metrics:        metricsserver.Options{BindAddress: "0"},
		// A restarted kipam registers the same controllers in this process
		// again; their names are unique per manager, as in production.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	m := ipam.NewManager(ipam.ClientStore{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient()}, nil)
	Expect(SetupWithManager(mgr, m)).To(Succeed())
	Expect(controller.SetupWithManager(ctx, mgr, m, controller.Options{OrphanGrace: orphanGrace, Now: suiteNow})).To(Succeed())

	mgrCtx, mgrCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()

	// Wait until the webhook server answers TLS.
	Eventually(func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe of our own test server
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
	Expect(done).NotTo(Receive(), "kipam stopped as it started")
	pools = m
	return func() {
		GinkgoHelper()
		mgrCancel()
		// mgr.Start returns once the webhook server has shut down, which
		// closes its listener first.
		Eventually(done).WithTimeout(time.Minute).Should(Receive(Not(HaveOccurred())))
		ln, err := net.Listen("tcp", addr)
		Expect(err).NotTo(HaveOccurred(), "the stopped webhook server still holds %s", addr)
		Expect(ln.Close()).To(Succeed())
	}
}
