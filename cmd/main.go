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

// Command manager runs kipam: the IPPool, IPClaim and IPAllocation
// controllers and the admission webhooks that allocate and validate.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	// Import all Kubernetes client auth plugins (e.g. Azure, GCP, OIDC, etc.)
	// to ensure that exec-entrypoint and run can make use of them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"github.com/KimMachineGun/automemlimit/memlimit"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics/poolmetrics"
	webhookv1alpha1 "github.com/kipam/kipam/internal/webhook/v1alpha1"
	"k8s.io/apimachinery/pkg/util/uuid"
	// +kubebuilder:scaffold:imports
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
	utilruntime.Must(capiv1beta2.AddToScheme(scheme))
	// +kubebuilder:scaffold:scheme
}

// cacheSyncTimeout is how long a controller waits for its caches to fill
// at start before the manager gives up.
const cacheSyncTimeout = 15 * time.Minute

func main() {
	var (
		metricsAddr, probeAddr      string
		webhookHost, webhookCertDir string
		webhookPort                 int
		enableLeaderElection        bool
		secureMetrics, enableHTTP2  bool
		enableWebhooks              bool
		orphanGrace                 time.Duration
		maxLedgerBytes              int
		workers                     int
		apiQPS                      float64
		apiBurst                    int
		pprofAddr                   string
		leaseNamespace, advertise   string
		identity                    string
		leaseDuration               time.Duration
		clockOffset                 time.Duration
		retryMaxDelay               time.Duration
		tlsOpts                     []func(*tls.Config)
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to. "+
		"Use :8443 for HTTPS or :8080 for HTTP, or leave as 0 to disable the metrics service.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the probe endpoint binds to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "The address Go's pprof endpoints bind to, for profiling (default: off).")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false,
		"Enable leader election for the controller manager, so that one replica reconciles at a time.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"If set, the metrics endpoint is served securely via HTTPS. Use --metrics-secure=false to use HTTP instead.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"If set, HTTP/2 will be enabled for the metrics and webhook servers")
	flag.BoolVar(&enableWebhooks, "enable-webhooks", os.Getenv("ENABLE_WEBHOOKS") != "false",
		"Serve the admission webhooks. Without them claims are not allocated at creation.")
	flag.StringVar(&webhookHost, "webhook-host", "", "The address the webhook server binds to (default: all).")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "The port the webhook server listens on.")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "",
		"The directory holding the webhook serving certificate tls.crt and key tls.key "+
			"(default: /tmp/k8s-webhook-server/serving-certs).")
	flag.DurationVar(&orphanGrace, "orphan-grace", controller.DefaultOrphanGrace,
		"How long a committed prefix may go without a claim carrying it before it is released. "+
			"It must exceed the webhook timeout (15s) plus the API server's request timeout (60s by default).")
	flag.IntVar(&workers, "workers", controller.DefaultWorkers,
		"How many claims, and how many IPAllocations, are reconciled at once (Cluster API's IPAddressClaims: four times as many): "+
			"more makes a burst of creates Ready sooner.")
	flag.Float64Var(&apiQPS, "kube-api-qps", 0,
		"The most requests a second each of kipam's clients sends the API server, per resource kind, on average; "+
			"0 sets no client-side limit and leaves it to the API server's API Priority and Fairness.")
	flag.IntVar(&apiBurst, "kube-api-burst", 0,
		"The most requests each of kipam's clients sends the API server at once, per resource kind, "+
			"with --kube-api-qps (default: twice --kube-api-qps).")
	flag.IntVar(&maxLedgerBytes, "max-ledger-bytes", ipam.DefaultMaxLedgerBytes,
		"The most entry text one IPLedger object may record; a claim that would pass it is denied. "+
			"Keep it a third below etcd's --max-request-bytes (1.5 MiB by default).")
	flag.StringVar(&leaseNamespace, "lease-namespace", os.Getenv("POD_NAMESPACE"),
		"The namespace of the per-pool owner Leases that route each pool's claims to one replica. "+
			"Empty (and no POD_NAMESPACE) serves every pool in every replica, fenced by the ledgers alone.")
	flag.StringVar(&advertise, "advertise-address", "",
		"host:port where other replicas reach this one's webhook server (default: $POD_IP and --webhook-port).")
	flag.StringVar(&identity, "identity", "",
		"This replica's name in the pool Leases; unique among replicas (default: the host name and a random suffix).")
	flag.DurationVar(&leaseDuration, "pool-lease-duration", ipam.DefaultLeaseDuration,
		"How long a replica owns a pool without renewing its Lease.")
	flag.DurationVar(&retryMaxDelay, "retry-max-delay", controller.DefaultRetryMaxDelay,
		"The longest a reconciler waits before retrying an object whose reconcile failed, however often it failed: "+
			"a release refused for a while is retried at most this long after the refusals stop.")
	flag.DurationVar(&clockOffset, "clock-offset", 0,
		"For tests only: shift every clock kipam reads (holds, grace periods, pool Leases, sightings) by this much, "+
			"as if this replica's clock were wrong. client-go's leader election keeps the real clock.")
	opts := zap.Options{Development: true}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	// A soft memory limit at 90 % of the container's: near it the garbage
	// collector works harder, instead of letting the heap grow to twice what
	// it keeps (a manager restarted holding 100,000 claims kept 393 MB of
	// heap in 1.1 GB of RSS: docs/benchmarks.md, "Scale"), so that it is not
	// killed for memory it does not need. GOMEMLIMIT in the environment
	// wins; AUTOMEMLIMIT sets another ratio, or "off".
	if limit, err := memlimit.Set(memlimit.WithRatio(0.9), memlimit.WithProvider(memlimit.FromCgroup)); err != nil {
		setupLog.Info("no soft memory limit: the container's memory limit could not be read", "reason", err.Error())
	} else if limit != math.MaxInt64 {
		setupLog.Info("soft memory limit (GOMEMLIMIT)", "bytes", limit)
	}

	// HTTP/2 stays off by default: it exposed servers to the HTTP/2 Stream
	// Cancellation and Rapid Reset CVEs.
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if advertise == "" && os.Getenv("POD_IP") != "" {
		advertise = net.JoinHostPort(os.Getenv("POD_IP"), strconv.Itoa(webhookPort))
	}
	routed := enableWebhooks && leaseNamespace != "" && advertise != ""
	// Replicas forwarding a pool's claims to its owner present the shared
	// serving certificate; the API server presents none, which is allowed.
	webhookTLSOpts := tlsOpts
	if routed {
		webhookTLSOpts = append(slices.Clone(tlsOpts), func(c *tls.Config) { c.ClientAuth = tls.RequestClientCert })
	}

	webhookServer := webhook.NewServer(webhook.Options{
		Host:    webhookHost,
		Port:    webhookPort,
		CertDir: webhookCertDir,
		TLSOpts: webhookTLSOpts,
	})

	metricsServerOptions := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		metricsServerOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	ctx := ctrl.SetupSignalHandler()
	cfg := ctrl.GetConfigOrDie()
	if err := controller.APILimits(cfg, float32(apiQPS), apiBurst); err != nil {
		setupLog.Error(err, "invalid client rate limit")
		os.Exit(1)
	}
	if cfg.QPS > 0 {
		setupLog.Info("client-side rate limit, per client and resource kind", "qps", cfg.QPS, "burst", cfg.Burst)
	}
	stopProbes := answerProbes(probeAddr)
	if err := waitForAPIServer(ctx, cfg, 2*time.Second); err != nil {
		setupLog.Error(err, "stopped while waiting for the API server")
		os.Exit(1)
	}
	stopProbes()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controller.CacheOptions(),
		Client:                        controller.ClientOptions(),
		Metrics:                       metricsServerOptions,
		WebhookServer:                 webhookServer,
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                enableLeaderElection,
		LeaderElectionID:              "kipam.ipam.kipam.dev",
		LeaderElectionNamespace:       leaseNamespace, // in a pod: its own namespace either way
		LeaderElectionReleaseOnCancel: true,
		PprofBindAddress:              pprofAddr,
		// controller-runtime gives up after 2 minutes, and the manager exits:
		// a restart holding 100,000 claims (and as many IPAllocations) did
		// not list them in time on a busy API server (docs/benchmarks.md,
		// "Scale"). Until its caches are synced the manager is not ready
		// (its readyz check, below) and its webhook holds what reaches it,
		// so waiting longer costs nothing.
		Controller: ctrlconfig.Controller{CacheSyncTimeout: cacheSyncTimeout},
	})
	if err != nil {
		setupLog.Error(err, "unable to start manager")
		os.Exit(1)
	}

	if err := controller.CheckOrphanGrace(orphanGrace); err != nil {
		setupLog.Error(err, "invalid --orphan-grace")
		os.Exit(1)
	}
	// One allocator per pool, shared by the webhook and the reconcilers; the
	// pool's IPLedger in etcd is the durable record and the fence.
	// The one clock of everything kipam times; off the host's only in tests.
	now := time.Now
	if clockOffset != 0 {
		setupLog.Info("shifting kipam's clock, for a test", "offset", clockOffset)
		now = func() time.Time { return time.Now().Add(clockOffset) }
	}
	pools := ipam.NewManager(ipam.ClientStore{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient()}, now)
	pools.SetMaxLedgerBytes(maxLedgerBytes)
	if err := controller.SetupWithManager(ctx, mgr, pools, controller.Options{OrphanGrace: orphanGrace, Workers: workers,
		Now: now, RetryMaxDelay: retryMaxDelay, LeaseNamespace: leaseNamespace}); err != nil {
		setupLog.Error(err, "unable to create controllers")
		os.Exit(1)
	}
	// Each pool's usage, as its status records it, read from the cache at
	// every scrape of /metrics.
	crmetrics.Registry.MustRegister(poolmetrics.NewPoolCollector(mgr.GetCache()))
	if enableWebhooks {
		if err := webhookv1alpha1.SetupWithManager(mgr, pools); err != nil {
			setupLog.Error(err, "unable to create webhooks")
			os.Exit(1)
		}
	}
	if routed {
		live, err := client.New(controller.WithoutAPILimits(mgr.GetConfig()), client.Options{Scheme: scheme})
		if err != nil {
			setupLog.Error(err, "unable to create a client for the pool leases")
			os.Exit(1)
		}
		if identity == "" {
			hostname, _ := os.Hostname()
			identity = hostname + "_" + string(uuid.NewUUID())
		}
		owners := &ipam.Owners{Client: live, Namespace: leaseNamespace, Identity: identity,
			Address: advertise, Duration: leaseDuration, Lost: pools.Forget, Now: now}
		certDir := webhookCertDir
		if certDir == "" {
			certDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs") // the webhook server's default
		}
		router := ipam.NewRouter(owners, certDir)
		pools.SetRouter(router)
		mgr.GetWebhookServer().Register(ipam.ForwardPath, router.Handler(pools))
		if err := mgr.Add(owners); err != nil {
			setupLog.Error(err, "unable to run the pool leases")
			os.Exit(1)
		}
		setupLog.Info("routing each pool to its owning replica", "identity", owners.Identity, "address", advertise, "namespace", leaseNamespace)
	}
	// +kubebuilder:scaffold:builder

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	// Ready once the caches have synced and, with webhooks, the webhook
	// server listens: an admission sent sooner would wait for the caches.
	if enableWebhooks {
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			setupLog.Error(err, "unable to set up ready check")
			os.Exit(1)
		}
	}
	if err := mgr.AddReadyzCheck("caches", controller.CachesSynced(mgr.GetCache())); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	setupLog.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "problem running manager")
		os.Exit(1)
	}
}

// waitForAPIServer returns once the API server behind cfg answers, or
// with ctx's error once ctx ends. The manager's first request (the cache
// asks whether each kind it trims is namespaced) fails while the API
// server is unreachable, and kipam would exit; its kubelet then restarts
// it with a back-off that grows to five minutes, so a replica started
// during a control-plane restart or upgrade could stay down minutes after
// the API server is back. It waits instead, saying so at each attempt.
// An answer that is an error of the request (401, 403, 404: credentials,
// permissions) ends the wait: what follows reports it.
func waitForAPIServer(ctx context.Context, cfg *rest.Config, every time.Duration) error {
	c := rest.CopyConfig(cfg)
	c.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(c)
	if err != nil {
		return err
	}
	attempt := 0
	return wait.PollUntilContextCancel(ctx, every, true, func(context.Context) (bool, error) {
		_, err := dc.ServerVersion()
		var status apierrors.APIStatus
		if err == nil || (errors.As(err, &status) && status.Status().Code < http.StatusInternalServerError &&
			status.Status().Code != http.StatusTooManyRequests) {
			return true, nil
		}
		attempt++
		setupLog.Info("waiting for the API server", "host", cfg.Host, "attempt", attempt, "reason", err.Error())
		return false, nil
	})
}

// answerProbes answers the health probes on addr until stop is called:
// alive (/healthz), not ready (/readyz). While a replica waits for the
// API server its manager, which serves the probes, is not made yet; a
// liveness probe that went unanswered would have the kubelet restart it
// anyway. stop frees addr for the manager's own probes. An addr of "" or
// "0" (probes off) answers nothing.
func answerProbes(addr string) (stop func()) {
	if addr == "" || addr == "0" {
		return func() {}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		setupLog.Info("not answering the health probes while waiting for the API server", "reason", err.Error())
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "waiting for the API server", http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() { _ = srv.Close() }
}
