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

// Package testenv starts the envtest control plane that kipam's suites run
// against: etcd and kube-apiserver built from source by hack/controlplane.sh,
// with kipam's generated CRDs and Cluster API's IPAM CRDs installed, and,
// for suites that need garbage
// collection or namespace deletion, kube-controller-manager beside them.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Root is the repository's top directory.
var Root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

// Assets returns the directory of etcd, kube-apiserver,
// kube-controller-manager and kubectl: KUBEBUILDER_ASSETS when set, else
// bin/k8s. It fails, rather than letting a suite skip, when neither holds
// etcd and kube-apiserver; StartControllerManager checks for its own.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(Root, "bin", "k8s")
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := present(filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// New returns an environment with kipam's CRDs and, when withWebhooks is
// set, its webhook configurations pointing at a local webhook server.
func New(withWebhooks bool) (*envtest.Environment, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// Cluster API's IPAM CRDs, as its core provider installs them:
		// kipam serves its IPAddressClaims.
		CRDDirectoryPaths:     []string{filepath.Join(Root, "config", "crd", "bases"), filepath.Join(Root, "config", "capi", "crd")},
		ErrorIfCRDPathMissing: true,
	}
	if withWebhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join(Root, "config", "webhook")},
		}
	}
	return env, nil
}
