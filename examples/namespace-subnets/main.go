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

// Command namespace-subnets is an example kipam client: a controller that
// gives every Namespace labelled kipam.dev/subnet=<pool> one IPClaim from
// that pool and records its CIDR on the Namespace. See README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func main() {
	var (
		claimName     string
		prefixLength  int
		wait          bool
		retryBase     time.Duration
		retryMax      time.Duration
		metricsAddr   string
		probeAddr     string
		leaderElect   bool
		leaderElectNS string
	)
	flag.StringVar(&claimName, "claim-name", "subnet", "The name of the IPClaim created in each labelled namespace.")
	flag.IntVar(&prefixLength, "prefix-length", 28,
		"The length of the prefix to claim, e.g. 28 for an IPv4 /28 or 64 for an IPv6 /64; 0 takes each pool's defaultPrefixLength.")
	flag.BoolVar(&wait, "wait", false,
		"Create claims with spec.whenExhausted: Wait: on a full pool kipam creates them without a CIDR and binds them as space frees, "+
			"instead of denying them (which this controller retries with backoff).")
	flag.DurationVar(&retryBase, "retry-base", 5*time.Second, "The delay before the first retry of a denied claim; it doubles with each denial.")
	flag.DurationVar(&retryMax, "retry-max", 5*time.Minute, "The longest delay between retries of a denied claim.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to, e.g. :8080; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "0", "The address the /healthz and /readyz probes bind to, e.g. :8081; 0 disables them.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that one of several replicas reconciles at a time.")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "",
		"The namespace of the leader election Lease (default: the pod's namespace in a cluster).")
	opts := zap.Options{Development: true}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	if err := checkFlags(claimName, prefixLength, retryBase, retryMax); err != nil {
		log.Error(err, "invalid flags")
		os.Exit(2)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "namespace-subnets.kipam.dev",
		LeaderElectionNamespace:       leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	r := &Reconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder("namespace-subnets"),
		ClaimName:    claimName,
		PrefixLength: int32(prefixLength),
		Wait:         wait,
		Backoff:      workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](retryBase, retryMax),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to create the controller")
		os.Exit(1)
	}
	if probeAddr != "0" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			log.Error(err, "unable to add the health check")
			os.Exit(1)
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			log.Error(err, "unable to add the ready check")
			os.Exit(1)
		}
	}
	log.Info("watching namespaces labelled "+LabelPool, "claimName", claimName, "prefixLength", prefixLength, "wait", wait)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "the manager stopped")
		os.Exit(1)
	}
}

// checkFlags refuses flag values the controller could not work with,
// saying which and why.
func checkFlags(claimName string, prefixLength int, retryBase, retryMax time.Duration) error {
	if errs := validation.IsDNS1123Subdomain(claimName); len(errs) > 0 {
		return fmt.Errorf("-claim-name %q is not a valid object name: %s", claimName, strings.Join(errs, "; "))
	}
	if prefixLength < 0 || prefixLength > 128 {
		return fmt.Errorf("-prefix-length %d must lie between 0 (the pool's default) and 128", prefixLength)
	}
	if retryBase <= 0 || retryMax < retryBase {
		return fmt.Errorf("-retry-base %s must be positive and at most -retry-max %s", retryBase, retryMax)
	}
	return nil
}
