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

// Command localcluster runs a local control plane for kipam: etcd,
// kube-apiserver and kube-controller-manager (only its garbage collector and
// namespace controller) on loopback, built from source by
// hack/controlplane.sh, with kipam's CRDs and admission policies installed
// and its webhook configurations pointing at a kipam process on loopback,
// trusted through a CA generated here.
//
// It runs in the foreground until SIGINT or SIGTERM, then stops the three
// processes. Once the cluster is up it writes, under -dir:
//
//	kubeconfig      an admin kubeconfig (system:masters)
//	webhook-certs/  tls.crt and tls.key for kipam's webhook server
//	env             shell assignments: KUBECONFIG, WEBHOOK_HOST, WEBHOOK_PORT,
//	                WEBHOOK_CERT_DIR, PROBE_ADDR, METRICS_ADDR
//	ready           present while the cluster serves
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kipam/kipam/internal/testenv"
)

func main() {
	root, _ := os.Getwd()
	dir := flag.String("dir", filepath.Join(root, ".local", "cluster"), "directory for the cluster's state and outputs")
	assets := flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory holding etcd, kube-apiserver, kube-controller-manager and kubectl")
	crds := flag.String("crds", filepath.Join(root, "config", "crd", "bases")+","+filepath.Join(root, "config", "capi", "crd"),
		"comma-separated directories of CRD manifests to install (kipam's, and Cluster API's IPAM CRDs)")
	webhooks := flag.String("webhooks", filepath.Join(root, "config", "webhook"), "directory of webhook configurations to install")
	policies := flag.String("policies", filepath.Join(root, "config", "policy"), "directory of admission policies to install (kipam's ValidatingAdmissionPolicies)")
	flag.Parse()
	if err := run(*dir, *assets, *crds, *webhooks, *policies); err != nil {
		fmt.Fprintf(os.Stderr, "localcluster: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, assets, crds, webhooks, policies string) error {
	if assets == "" {
		return fmt.Errorf("set -assets or KUBEBUILDER_ASSETS to the directory of etcd, kube-apiserver and kube-controller-manager (make controlplane)")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	certDir := filepath.Join(dir, "webhook-certs")
	for _, d := range []string{filepath.Join(dir, "etcd"), certDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(dir, "ready"))
	logs, err := os.OpenFile(filepath.Join(dir, "controlplane.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logs.Close()

	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     strings.Split(crds, ","),
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			Paths:               []string{webhooks},
			LocalServingHost:    "127.0.0.1",
			LocalServingCertDir: certDir,
		},
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd"), Out: logs, Err: logs}
	env.ControlPlane.APIServer = &envtest.APIServer{Out: logs, Err: logs}
	if _, err := env.Start(); err != nil {
		_ = env.Stop() // Start leaves etcd and kube-apiserver running when a later step fails
		return fmt.Errorf("starting the control plane (log: %s): %w", logs.Name(), err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster: stopping: %v\n", err)
		}
	}()
	// The garbage collector and the namespace controller, so that claims go
	// (and kipam releases them) with their owners and namespaces.
	kcm, err := testenv.StartControllerManager(env, logs)
	if err != nil {
		return fmt.Errorf("starting kube-controller-manager (log: %s): %w", logs.Name(), err)
	}
	defer func() { // before env.Stop, so that it never outlives its API server
		if err := kcm.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster: stopping: %v\n", err)
		}
	}()

	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	if err := testenv.InstallPolicies(context.Background(), c, policies); err != nil {
		return fmt.Errorf("installing the admission policies: %w", err)
	}

	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "kipam-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	probe, err := testenv.FreePort()
	if err != nil {
		return err
	}
	metrics, err := testenv.FreePort()
	if err != nil {
		return err
	}
	wh := env.WebhookInstallOptions
	vars := fmt.Sprintf("KUBECONFIG=%s\nWEBHOOK_HOST=%s\nWEBHOOK_PORT=%d\nWEBHOOK_CERT_DIR=%s\nPROBE_ADDR=127.0.0.1:%d\nMETRICS_ADDR=127.0.0.1:%d\n",
		kubeconfigPath, wh.LocalServingHost, wh.LocalServingPort, wh.LocalServingCertDir, probe, metrics)
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(vars), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600); err != nil {
		return err
	}
	fmt.Printf("localcluster: serving at %s; state in %s\n", env.Config.Host, dir)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = os.Remove(filepath.Join(dir, "ready"))
	fmt.Println("localcluster: stopping")
	return nil
}
