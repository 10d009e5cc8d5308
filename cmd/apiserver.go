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

package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

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
