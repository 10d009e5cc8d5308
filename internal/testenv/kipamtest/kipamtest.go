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

// Package kipamtest runs kipam inside a test's process, against an envtest
// control plane, as cmd/main.go runs it: one controller manager with the
// webhook server and every controller. It lives apart from testenv, which
// the controllers' own tests import, because it imports the controllers.
package kipamtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/ipam"
)

// Kipam is kipam running in this process.
type Kipam struct {
	// Manager is its ipam.Manager.
	Manager *ipam.Manager

	cancel context.CancelFunc
	done   chan error
	addr   string
}

// Start starts kipam against env's API server (cfg) on a fresh
// ipam.Manager that knows nothing but what the API server holds, and
// returns once its webhook server answers TLS. setupWebhooks registers
// kipam's webhooks (internal/webhook/v1alpha1.SetupWithManager, passed in
// so that that package's own tests can start kipam here too).
func Start(ctx context.Context, env *envtest.Environment, cfg *rest.Config, scheme *runtime.Scheme,
	setupWebhooks func(ctrl.Manager, *ipam.Manager) error, opts controller.Options) (*Kipam, error) {
	wh := &env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache:  controller.CacheOptions(),
		Client: controller.ClientOptions(),
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wh.LocalServingHost,
			Port:    wh.LocalServingPort,
			CertDir: wh.LocalServingCertDir,
		}),
		LeaderElection: false,
		Metrics:        metricsserver.Options{BindAddress: "0"},
		// kipam started again in this process registers the same
		// controllers again; their names are unique per manager, as in
		// production.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	m := ipam.NewManager(ipam.ClientStore{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient()}, nil)
	if err := setupWebhooks(mgr, m); err != nil {
		return nil, err
	}
	if err := controller.SetupWithManager(ctx, mgr, m, opts); err != nil {
		return nil, err
	}
	mgrCtx, cancel := context.WithCancel(ctx)
	k := &Kipam{Manager: m, cancel: cancel, done: make(chan error, 1),
		addr: net.JoinHostPort(wh.LocalServingHost, fmt.Sprint(wh.LocalServingPort))}
	go func() { k.done <- mgr.Start(mgrCtx) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", k.addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe of our own test server
		if err == nil {
			_ = conn.Close()
			break
		}
		select {
		case err := <-k.done:
			cancel()
			return nil, fmt.Errorf("kipam stopped as it started: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = k.Stop()
			return nil, fmt.Errorf("kipam's webhook server does not answer on %s: %w", k.addr, err)
		}
	}
	return k, nil
}

// Stop stops kipam and waits until it is down and its webhook listener is
// closed, so that kipam can be started again on the same port.
func (k *Kipam) Stop() error {
	k.cancel()
	// mgr.Start returns once the webhook server has shut down, which closes
	// its listener first.
	select {
	case err := <-k.done:
		if err != nil {
			return err
		}
	case <-time.After(time.Minute):
		return errors.New("kipam did not stop within a minute")
	}
	ln, err := net.Listen("tcp", k.addr)
	if err != nil {
		return fmt.Errorf("the stopped webhook server still holds %s: %w", k.addr, err)
	}
	return ln.Close()
}
