# kipam Makefile, after the kubebuilder v4 scaffold.

# Image URL to use all building/pushing image targets
IMG ?= kipam:latest

# Get the currently used golang install path (in GOPATH/bin, unless GOBIN is set)
ifeq (,$(shell go env GOBIN))
GOBIN=$(shell go env GOPATH)/bin
else
GOBIN=$(shell go env GOBIN)
endif

# Setting SHELL to bash allows bash commands to be executed by recipes.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs, RBAC and webhook configurations.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	hack/chart.sh

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: test
test: manifests generate fmt vet controlplane ## Run unit and envtest suites against a control plane built from source.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $$(go list ./... | grep -v /test/e2e) -coverpkg ./... -coverprofile cover.out -timeout 30m $(TEST_ARGS)
	hack/coverage.sh cover.out

.PHONY: test-e2e
test-e2e: controlplane build localcluster helm ## Run the e2e suite with kubectl against a local cluster, and check the chart's alerting rules.
	$(HELM) lint dist/chart
	cd test/promrules && HELM="$(HELM)" go test -count=1 ./...
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" HELM="$(HELM)" go test -tags e2e ./test/e2e/ -v -timeout 30m

CHAOS_DURATION ?= 3m
CHAOS_SEED ?=

.PHONY: chaos
chaos: controlplane build ## Run the chaos suite: 3 replicas, faults on a seeded schedule, then the never-twice and no-leak checks (CHAOS_DURATION, CHAOS_SEED).
	CHAOS_DURATION="$(CHAOS_DURATION)" CHAOS_SEED="$(CHAOS_SEED)" KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" \
		go test -tags chaos ./test/chaos/ -run '^TestChaos$$' -v -count=1 -timeout 0

.PHONY: fuzz
fuzz: ## Run the allocator fuzz target (FUZZTIME=30s by default).
	go test ./internal/allocator -run '^$$' -fuzz FuzzAllocator -fuzztime $(FUZZTIME) -parallel 1

FUZZTIME ?= 30s

.PHONY: bench
bench: ## Run the allocator benchmarks.
	go test ./internal/allocator -run '^$$' -bench . -benchmem -count 6

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and fix what it can.
	$(GOLANGCI_LINT) run --fix

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager binary.
	go build -o bin/manager cmd/main.go

.PHONY: plugin
plugin: fmt vet ## Build the kubectl plugin (kubectl kipam) into bin/kubectl-kipam.
	go build -o bin/kubectl-kipam ./cmd/kubectl-kipam

.PHONY: run
run: manifests generate fmt vet ## Run a controller from your host against the current kubeconfig.
	go run ./cmd/main.go

.PHONY: docker-build
docker-build: ## Build the manager image (needs a container engine).
	$(CONTAINER_TOOL) build -t $(IMG) .

CONTAINER_TOOL ?= docker

.PHONY: build-installer
build-installer: manifests generate controlplane ## Write dist/install.yaml with the CRDs and the deployment.
	mkdir -p dist
	$(KUBECTL) kustomize config/default | sed 's|image: kipam:latest|image: $(IMG)|' > dist/install.yaml

##@ Local cluster

.PHONY: controlplane
controlplane: ## Build (or take from cache) etcd, kube-apiserver, kube-controller-manager and kubectl into bin/k8s.
	hack/controlplane.sh

.PHONY: localcluster
localcluster: ## Build the local cluster runner (etcd, kube-apiserver and kube-controller-manager).
	go build -o bin/localcluster ./hack/localcluster

.PHONY: demo
demo: controlplane build localcluster ## Start a local cluster, run kipam with its webhook, apply the samples.
	hack/demo.sh up

LOAD_ARGS ?= -workers 1,10,50 -claims 2000 -reps 5 -csv .local/load.csv
DEMO_DIR ?= .local/demo

.PHONY: load
load: ## Measure the claim path against make demo's cluster, beside a bare CRD (hack/load; LOAD_ARGS sets the runs).
	go run ./hack/load -kubeconfig $(DEMO_DIR)/cluster/kubeconfig \
		-manager-metrics "$$(sed -n 's/^METRICS_ADDR=//p' $(DEMO_DIR)/cluster/env)" $(LOAD_ARGS)

.PHONY: load-smoke
load-smoke: ## A short load run against make demo's cluster: no duplicate, no failure, writes per claim bounded; no timings checked.
	$(MAKE) load LOAD_ARGS="-workers 10 -claims 300 -reps 1 -max-writes 3.5"

.PHONY: load-plot
load-plot: ## Draw docs/claim-latency.png from a load CSV (LOAD_CSV, default .local/load.csv).
	cd hack/loadplot && go run . -in $(abspath $(or $(LOAD_CSV),.local/load.csv)) -out ../../docs/claim-latency.png

.PHONY: demo-down
demo-down: ## Stop everything make demo started.
	hack/demo.sh down

##@ Deployment

.PHONY: install
install: manifests controlplane ## Install CRDs into the cluster of the current kubeconfig.
	$(KUBECTL) apply -k config/crd

.PHONY: uninstall
uninstall: manifests controlplane ## Uninstall CRDs from the cluster of the current kubeconfig.
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: build-installer ## Deploy the controller (image IMG) to the cluster of the current kubeconfig.
	$(KUBECTL) apply -f dist/install.yaml

.PHONY: undeploy
undeploy: controlplane ## Undeploy the controller from the cluster of the current kubeconfig.
	$(KUBECTL) delete --ignore-not-found -k config/default

##@ Dependencies

LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

ENVTEST_ASSETS ?= $(LOCALBIN)/k8s
KUBECTL ?= $(ENVTEST_ASSETS)/kubectl
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
HELM ?= $(LOCALBIN)/helm

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_VERSION ?= v4.3.1

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Download controller-gen locally if necessary.
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: helm
helm: $(HELM) ## Build helm locally if necessary.
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v4/cmd/helm,$(HELM_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Download golangci-lint locally if necessary.
$(GOLANGCI_LINT): $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f $(1) ;\
GOBIN=$(LOCALBIN) go install $${package} ;\
mv $(1) $(1)-$(3) ;\
} ;\
ln -sf $$(realpath $(1)-$(3)) $(1)
endef
