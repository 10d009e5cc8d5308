//go:build tools

// Package tools pins the Kubernetes control-plane binaries that kipam's
// envtest suites and local cluster run against. hack/controlplane.sh builds
// them from this module with the Go module proxy as the only source.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
