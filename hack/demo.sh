#!/usr/bin/env bash
# Runs kipam on a local control plane and leaves it running in the background.
#
#   hack/demo.sh up     start etcd, kube-apiserver and kube-controller-manager,
#                       kipam with its webhooks, apply config/samples, print
#                       what to try next
#   hack/demo.sh down   stop everything that up started
#   hack/demo.sh env    print the shell lines that point kubectl at it
#
# make demo / make demo-down build what this needs first. KIPAM_ARGS adds
# flags to kipam's command line (for instance KIPAM_ARGS="--workers=16
# --pprof-bind-address=127.0.0.1:6061" to measure a setting).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${KIPAM_DEMO_DIR:-$root/.local/demo}
bin=$root/bin
kubectl=$bin/k8s/kubectl

log() { printf '[demo] %s\n' "$*" >&2; }

# A command that stops the script says so: once, under load, `make demo`
# exited 1 right after starting kipam with no word of why.
set -E
trap 'log "stopped: line $LINENO: $BASH_COMMAND exited $?"' ERR

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop PIDFILE NAME sends SIGTERM and waits for the process to exit.
stop() {
	local pidfile=$1 name=$2 pid i
	if alive "$pidfile"; then
		pid=$(cat "$pidfile")
		log "stopping $name (pid $pid)"
		kill -TERM "$pid"
		for ((i = 0; i < 300; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name did not stop in 30s; killing it"
		fi
		# Each was started with setsid as the leader of its own process group:
		# this ends it and anything it left behind in that group
		# (kube-controller-manager). envtest puts etcd and kube-apiserver in
		# groups of their own; localcluster stops them on SIGTERM.
		kill -KILL -- "-$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

# wait_for WHAT SECONDS COMMAND... retries COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	log "timed out after ${secs}s waiting for $what"
	return 1
}

# ready_or_dead FILE PIDFILE succeeds once FILE exists or the process is gone.
ready_or_dead() { [[ -f $1 ]] || ! alive "$2"; }

# http_ok HOST:PORT PATH succeeds when an HTTP GET answers 200 (bash only,
# so that the demo needs no curl).
http_ok() {
	local reply
	exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
	read -r reply <&3 || true
	exec 3<&-
	[[ $reply == *" 200 "* ]]
}

down() {
	stop "$dir/manager.pid" "kipam"
	stop "$dir/cluster.pid" "the local control plane"
	log "stopped; state left in $dir"
}

instructions() {
	local metrics
	metrics=$(sed -n 's/^METRICS_ADDR=//p' "$dir/cluster/env" 2>/dev/null)
	cat <<MSG

kipam is running on a local control plane (logs in $dir).
Point kubectl at it:

  export KUBECONFIG=$dir/cluster/kubeconfig
  export PATH=$bin/k8s:\$PATH

Then try:

  kubectl get kipam                       # pools, claims and allocations
  kubectl get ippools                     # usage of each pool
  kubectl get ipclaims -A                 # every claim and its CIDR
  kubectl explain ipclaim.spec            # the claim API, field by field
  kubectl get ipaddressclaims.ipam.cluster.x-k8s.io,ipaddresses.ipam.cluster.x-k8s.io -A   # Cluster API machine addresses
  curl -s http://$metrics/metrics | grep '^kipam_pool'   # pool usage for Prometheus
  kubectl create -f - <<'YAML'
  apiVersion: ipam.kipam.dev/v1alpha1
  kind: IPClaim
  metadata: {generateName: web-, namespace: default}
  spec: {pool: tenant-a}
  YAML

Stop it all with: make demo-down
MSG
}

up() {
	if alive "$dir/cluster.pid"; then
		log "already running"
		instructions
		return 0
	fi
	down >/dev/null 2>&1 || true
	rm -rf "$dir"
	mkdir -p "$dir"

	log "starting etcd, kube-apiserver and kube-controller-manager on loopback"
	KUBEBUILDER_ASSETS=$bin/k8s setsid nohup "$bin/localcluster" -dir "$dir/cluster" \
		-crds "$root/config/crd/bases,$root/config/capi/crd" -webhooks "$root/config/webhook" -policies "$root/config/policy" \
		>"$dir/cluster.log" 2>&1 </dev/null &
	echo $! >"$dir/cluster.pid"
	if ! wait_for "the control plane" 120 ready_or_dead "$dir/cluster/ready" "$dir/cluster.pid" ||
		! [[ -f $dir/cluster/ready ]]; then
		tail -n 20 "$dir/cluster.log" "$dir/cluster/controlplane.log" >&2 || true
		down
		return 1
	fi
	# shellcheck disable=SC1091
	set -a && source "$dir/cluster/env" && set +a

	log "starting kipam (webhook on $WEBHOOK_HOST:$WEBHOOK_PORT)"
	# One replica, run as in a cluster: leader election and the pool Leases
	# in namespace default (in a pod, its own namespace).
	setsid nohup "$bin/manager" --kubeconfig "$KUBECONFIG" \
		--webhook-host "$WEBHOOK_HOST" --webhook-port "$WEBHOOK_PORT" --webhook-cert-dir "$WEBHOOK_CERT_DIR" \
		--health-probe-bind-address "$PROBE_ADDR" --metrics-bind-address "$METRICS_ADDR" --metrics-secure=false \
		--leader-elect --lease-namespace default --identity demo-a --advertise-address "$WEBHOOK_HOST:$WEBHOOK_PORT" \
		${KIPAM_ARGS:-} >"$dir/manager.log" 2>&1 </dev/null &
	echo $! >"$dir/manager.pid"
	if ! wait_for "kipam to be ready" 60 http_ok "$PROBE_ADDR" /readyz; then
		tail -n 20 "$dir/manager.log" >&2 || true
		down
		return 1
	fi

	log "applying config/samples: pools first, then claims"
	"$kubectl" apply -f "$root/config/samples/ipam_v1alpha1_ippool.yaml"
	"$kubectl" wait --for=condition=Ready ippool --all --timeout=60s
	"$kubectl" apply -f "$root/config/samples/ipam_v1alpha1_ipclaim.yaml"
	"$kubectl" wait --for=condition=Ready ipclaim --all -A --timeout=60s
	# Cluster API's IPAM CRDs are installed here as Cluster API's core
	# provider would: a machine's address from a kipam pool.
	"$kubectl" apply -f "$root/config/samples/ipam_v1beta2_ipaddressclaim.yaml"
	"$kubectl" wait --for=condition=Ready ipaddressclaim --all -A --timeout=60s
	"$kubectl" get kipam -A
	instructions
}

case ${1:-} in
up) up ;;
down) down ;;
env) echo "export KUBECONFIG=$dir/cluster/kubeconfig PATH=$bin/k8s:\$PATH" ;;
*)
	echo "usage: $0 up|down|env" >&2
	exit 2
	;;
esac
