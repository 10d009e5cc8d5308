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
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/testenv"
)

// replica is a second kipam replica: a Manager behind a webhook server of
// its own that takes only forwarded changes.
type replica struct {
	pools  *ipam.Manager
	owners *ipam.Owners
	stop   func()
}

// replicaConfig is what a spec changes of the replica startReplica starts.
type replicaConfig struct {
	// handler wraps the handler that serves forwarded changes.
	handler func(http.Handler) http.Handler
	// user, when set, is the user the replica's requests impersonate (an
	// admission policy can then tell its writes from the suite's).
	user string
}

func startReplica(identity string, opts ...func(*replicaConfig)) *replica {
	GinkgoHelper()
	var conf replicaConfig
	for _, o := range opts {
		o(&conf)
	}
	port, err := testenv.FreePort()
	Expect(err).NotTo(HaveOccurred())
	certDir := testEnv.WebhookInstallOptions.LocalServingCertDir
	rc := cfg
	if conf.user != "" {
		rc = rest.CopyConfig(cfg)
		rc.Impersonate = rest.ImpersonationConfig{UserName: conf.user, Groups: []string{"system:masters"}}
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	r := &replica{pools: ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)}
	r.owners = &ipam.Owners{Client: c, Namespace: "default", Identity: identity, Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	router := ipam.NewRouter(r.owners, certDir)
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.ClientAuth = tls.RequestClientCert }}})
	h := router.Handler(r.pools)
	if conf.handler != nil {
		h = conf.handler(h)
	}
	srv.Register(ipam.ForwardPath, h)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(srv.Start(sctx)).To(Succeed())
	}()
	Eventually(func() error {
		conn, err := tls.Dial("tcp", r.owners.Address, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
	r.stop = func() { cancel(); <-done }
	DeferCleanup(r.stop)
	return r
}

// routeHere makes the suite's kipam a routed replica called identity,
// until the spec ends: it serves the pools whose Lease it takes and
// forwards the others to their owners.
func routeHere(identity string) {
	GinkgoHelper()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	here := &ipam.Owners{Client: c, Namespace: "default", Identity: identity, Address: "127.0.0.1:1"}
	pools.SetRouter(ipam.NewRouter(here, testEnv.WebhookInstallOptions.LocalServingCertDir))
	DeferCleanup(func() { pools.SetRouter(nil) })
}

var _ = Describe("Pool owners", func() {
	It("routes a pool's claims to the replica holding its Lease, and serves them anyway when it is gone", func() {
		p := createPool("10.88.0.0/22", nil)
		owner := startReplica("replica-b")
		Expect(owner.owners.Owner(ctx, p.Name)).To(BeEmpty(), "replica b takes the free Lease")

		By("making the suite's kipam a routed replica that does not own the pool")
		var skew atomic.Int64
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		here := &ipam.Owners{Client: c, Namespace: "default", Identity: "replica-a", Address: "127.0.0.1:1",
			Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}
		pools.SetRouter(ipam.NewRouter(here, testEnv.WebhookInstallOptions.LocalServingCertDir))
		DeferCleanup(func() { pools.SetRouter(nil) })
		conflictsBefore := pools.Conflicts()

		create := func(n int) []string {
			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				got []string
			)
			for i := range n {
				wg.Go(func() {
					defer GinkgoRecover()
					claim := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
						c.Spec.PrefixLength = ptr.To(int32([]int{32, 30, 28}[i%3]))
					})
					Expect(k8sClient.Create(ctx, claim)).To(Succeed())
					mu.Lock()
					got = append(got, claim.Spec.CIDR)
					mu.Unlock()
				})
			}
			wg.Wait()
			return got
		}

		By("creating claims through the API server: the suite's webhook forwards them to b")
		forwarded := create(60)
		snap, ok := owner.pools.Snapshot(p.Name)
		Expect(ok).To(BeTrue(), "replica b served the pool")
		Expect(snap.Claims).To(BeEquivalentTo(60))
		_, servedHere := pools.Snapshot(p.Name)
		Expect(servedHere).To(BeFalse(), "the suite's replica never built the pool")
		Expect(ledgerOf(p.Name)).To(ConsistOf(forwarded))

		By("stopping b while its Lease still runs: the suite's replica serves the pool itself")
		owner.stop()
		fallback := create(30)
		all := append(forwarded, fallback...)
		expectDisjoint(all)
		Expect(ledgerOf(p.Name)).To(ConsistOf(all))
		Expect(pools.Conflicts()).To(Equal(conflictsBefore), "b's commits were read, not raced")

		By("letting b's Lease lapse: the suite's replica takes it")
		skew.Store(int64(2 * ipam.DefaultLeaseDuration))
		Expect(here.Owner(ctx, p.Name)).To(BeEmpty())
		var lease coordinationv1.Lease
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: ipam.LeaseName(p.Name)}, &lease)).To(Succeed())
		Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("replica-a"))
		Expect(ptr.Deref(lease.Spec.LeaseTransitions, 0)).To(BeEquivalentTo(2))
		last := create(3)
		expectDisjoint(append(all, last...))
	})

	It("takes a pool over when its owner refuses connections, without waiting for the owner's Lease to lapse", func() {
		p := createPool("10.89.2.0/24", nil)
		owner := startReplica("replica-e")
		Expect(owner.owners.Owner(ctx, p.Name)).To(BeEmpty(), "replica e takes the free Lease")
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		here := &ipam.Owners{Client: c, Namespace: "default", Identity: "replica-a", Address: "127.0.0.1:1"}
		pools.SetRouter(ipam.NewRouter(here, testEnv.WebhookInstallOptions.LocalServingCertDir))
		DeferCleanup(func() { pools.SetRouter(nil) })
		first := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, first)).To(Succeed())
		_, ok := owner.pools.Snapshot(p.Name)
		Expect(ok).To(BeTrue(), "replica e served the pool")

		By("stopping e while its Lease still runs: the next claim takes the pool over")
		owner.stop()
		second := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		expectDisjoint([]string{first.Spec.CIDR, second.Spec.CIDR})
		key := client.ObjectKey{Namespace: "default", Name: ipam.LeaseName(p.Name)}
		var lease coordinationv1.Lease
		Expect(k8sClient.Get(ctx, key, &lease)).To(Succeed())
		Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("replica-a"))
		Expect(lease.Annotations).To(HaveKeyWithValue(ipam.AddressAnnotation, here.Address))
		Expect(here.Owner(ctx, p.Name)).To(BeEmpty(), "the suite's replica owns the pool")

		By("a Lease that names another owner than the one that refused stays where it is")
		lease.Spec.HolderIdentity = ptr.To("replica-f")
		lease.Annotations[ipam.AddressAnnotation] = "127.0.0.1:2"
		Expect(k8sClient.Update(ctx, &lease)).To(Succeed())
		Expect(here.TakeOver(ctx, p.Name, "127.0.0.1:3")).To(BeFalse())
		Expect(k8sClient.Get(ctx, key, &lease)).To(Succeed())
		Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("replica-f"))
	})

	It("deletes a deleted pool's Lease, and takes a new one when the pool is created again", func() {
		p := createPool("10.89.0.0/24", nil)
		owner := startReplica("replica-d")
		var lost []string
		owner.owners.Lost = func(pool string) { lost = append(lost, pool) }
		Expect(owner.owners.Owner(ctx, p.Name)).To(BeEmpty(), "replica d takes the free Lease")
		key := client.ObjectKey{Namespace: "default", Name: ipam.LeaseName(p.Name)}
		var first coordinationv1.Lease
		Expect(k8sClient.Get(ctx, key, &first)).To(Succeed())

		By("deleting the pool: its Lease is gone before the pool is")
		deleteAndWait(p)
		err := k8sClient.Get(ctx, key, &coordinationv1.Lease{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "want NotFound, got %v", err)

		By("renewing: the owner finds its Lease gone and gives the pool up, without bringing the Lease back")
		owner.owners.Renew(ctx)
		Expect(lost).To(ConsistOf(p.Name))
		err = k8sClient.Get(ctx, key, &coordinationv1.Lease{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "want NotFound, got %v", err)

		By("creating the pool again under its name: served again, on a new Lease")
		again := pool("10.89.0.0/24", nil)
		again.Name = p.Name
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Expect(owner.owners.Owner(ctx, again.Name)).To(BeEmpty(), "replica d takes the new Lease")
		var lease coordinationv1.Lease
		Expect(k8sClient.Get(ctx, key, &lease)).To(Succeed())
		Expect(lease.UID).NotTo(Equal(first.UID))
		Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).To(Equal("replica-d"))
		Expect(lease.Annotations).To(HaveKeyWithValue(ipam.AddressAnnotation, owner.owners.Address))
		claim := newClaim("default", again.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		Expect(claim.Spec.CIDR).NotTo(BeEmpty())
	})

	It("sweeps, when it starts, the Leases of pools that no longer exist, and keeps the others", func() {
		live := createPool("10.89.1.0/24", nil)
		lease := func(name string) client.ObjectKey {
			GinkgoHelper()
			l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a-replica-long-gone")}}
			if err := k8sClient.Create(ctx, l); !apierrors.IsAlreadyExists(err) {
				Expect(err).NotTo(HaveOccurred())
			}
			return client.ObjectKeyFromObject(l)
		}
		gone := lease(ipam.LeaseName(fmt.Sprintf("gone-%d", seq.Add(1))))
		kept := []client.ObjectKey{lease(ipam.LeaseName(live.Name)), lease(ipam.LeaseName(ipam.SpaceIPv4)),
			lease(ipam.LeaseName(ipam.SpaceIPv6)), lease("not-a-pools-lease")}

		By("restarting kipam, as after an upgrade")
		stopKipam()
		stopKipam = startKipam()
		Eventually(func() error {
			return k8sClient.Get(ctx, gone, &coordinationv1.Lease{})
		}).Should(Satisfy(apierrors.IsNotFound))
		for _, key := range kept {
			Expect(k8sClient.Get(ctx, key, &coordinationv1.Lease{})).To(Succeed(), "%s stays", key.Name)
		}
	})

	It("refuses forwarded changes from anyone without kipam's certificate", func() {
		owner := startReplica("replica-c")
		conn, err := tls.Dial("tcp", owner.owners.Address, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // an intruder's client
		Expect(err).NotTo(HaveOccurred())
		_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", ipam.ForwardPath)
		Expect(err).NotTo(HaveOccurred())
		buf := make([]byte, 64)
		n, _ := conn.Read(buf)
		Expect(string(buf[:n])).To(HavePrefix("HTTP/1.1 403"))
		Expect(conn.Close()).To(Succeed())
	})
})
