#!/usr/bin/env bash
# Builds the control plane that kipam's envtest suites and local cluster run
# on -- kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes)
# and etcd -- from the pinned wrapper modules in hack/controlplane/, through
# the Go module proxy.
#
# Binaries are cached outside the clone, keyed by a hash of the wrapper
# modules and the Go version, so a fresh clone on a warm machine skips the
# build and a changed pin rebuilds. They are linked into bin/k8s, which is
# what KUBEBUILDER_ASSETS points at.
#
#   hack/controlplane.sh            build if needed, link into bin/k8s
#   hack/controlplane.sh --print    print the asset directory only
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$root/hack/controlplane
cache=${KIPAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kipam}
out=$root/bin/k8s

key() {
	(cd "$src/$1" && cat go.mod go.sum ./*.go && go env GOVERSION GOOS GOARCH) | sha256sum | cut -c1-16
}

log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build MODULE PACKAGES... builds the packages of one wrapper module into its
# cache directory unless they are already there, and prints that directory.
build() {
	local mod=$1; shift
	local dir=$cache/$mod-$(key "$mod")
	local names=() p
	for p in "$@"; do names+=("$(basename "$p")"); done
	local missing=0 n
	for n in "${names[@]}"; do [[ -x $dir/$n ]] || missing=1; done
	if ((missing)); then
		log "building ${names[*]} from hack/controlplane/$mod (cold: about 10 minutes on 2 cores)"
		local start=$SECONDS tmp
		mkdir -p "$cache"
		tmp=$(mktemp -d "$cache/.build-$mod.XXXXXX")
		(cd "$src/$mod" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags=-s -o "$tmp/" "$@")
		rm -rf "$dir" && mv "$tmp" "$dir"
		log "built ${names[*]} in $((SECONDS - start))s into $dir"
	else
		log "cached: ${names[*]} in $dir"
	fi
	echo "$dir"
}

if [[ ${1:-} == --print ]]; then
	echo "$out"
	exit 0
fi

etcd_dir=$(build etcd github.com/kipam/kipam/hack/controlplane/etcd)
kube_dir=$(build kubernetes k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)

mkdir -p "$out"
ln -sfn "$etcd_dir/etcd" "$out/etcd"
ln -sfn "$kube_dir/kube-apiserver" "$out/kube-apiserver"
ln -sfn "$kube_dir/kube-controller-manager" "$out/kube-controller-manager"
ln -sfn "$kube_dir/kubectl" "$out/kubectl"
log "ready: KUBEBUILDER_ASSETS=$out"
