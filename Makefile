# Failure Recovery Lab. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
PROFILE_DIR := target/debug
FRLAB := $(PROFILE_DIR)/frlab
# Tools installed by `make tools` (scripts/install-tools.sh) come first on PATH.
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the five services and frlab (debug)
	$(CARGO) build --workspace --bins

.PHONY: run
run: build ## Main job: start the local stack (embedded storage), place a sample order, print the audit, stop
	$(FRLAB) run-sample

.PHONY: experiment
experiment: ## Main job: calibrate, then the quick experiment (profiles a,b,d,g x 3 faults x loads 0.5, 0.9 of the knee; about 10 min) on release builds; report in results/
	$(CARGO) build --release --workspace --bins
	target/release/frlab experiment --quick

.PHONY: calibrate
calibrate: ## Measure the knee: an open-loop ramp against a fresh stack (about a minute)
	$(CARGO) build --release --workspace --bins
	target/release/frlab calibrate

.PHONY: sweep
sweep: ## The metastability sweep of b-naive-retries (5 loads x 5 trigger lengths, about 15 min); PROFILES=b-naive-retries,g-adaptive for more
	$(CARGO) build --release --workspace --bins
	target/release/frlab sweep --profile $(or $(PROFILES),b-naive-retries)

.PHONY: experiment-full
experiment-full: ## Every profile x every scenario, 3 trials, at 0.8 of the knee (about an hour)
	$(CARGO) build --release --workspace --bins
	target/release/frlab experiment --full

.PHONY: up
up: build ## Start the local stack and keep it running until ctrl-c
	$(FRLAB) up

.PHONY: order
order: build ## Place one order through a running stack (see `make up`)
	$(FRLAB) order

.PHONY: console
console: build ## Serve the live console of a running stack (`make up`) at http://127.0.0.1:8080
	$(FRLAB) console

.PHONY: tools
tools: ## Install what the tests call (nextest, helm, k6, validators, prometheus, chromium) if missing
	@scripts/install-tools.sh

.PHONY: test
test: tools image-archive ## Run every test (needs Postgres :5432, Redis :6379; starts the local cluster if it is not up, and stops it after)
	KUBECONFIG=$(K8S_RUN)/kubeconfig scripts/with-local-cluster.sh $(CARGO) nextest run --workspace --no-fail-fast

.PHONY: bench
bench: tools ## Benchmarks, each printed as ratios measured in the same run (bare tonic; k6)
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p lab-resilience --bench client_stack
	$(CARGO) bench -p frlab --bench chain
	$(CARGO) bench -p frlab --bench load_vs_k6

.PHONY: crds
crds: ## Regenerate k8s/crds/faultinjection.yaml from the Rust type (a test checks it is current)
	$(CARGO) run -q -p chaos-controller --bin crdgen > k8s/crds/faultinjection.yaml
	cp k8s/crds/faultinjection.yaml helm/frlab/crds/faultinjection.yaml

# ---- Kubernetes: README "Kubernetes". Two clusters run the same chart and targets:
#   kind (CLUSTER=kind, the default): needs docker and kind besides make tools;
#   the local cluster (CLUSTER=local): Kubernetes 1.20.2 built from Debian's source package
#   into K8S_PREFIX, run on 127.0.0.1 from K8S_RUN by `make cluster-local` (root, no Docker).
KIND_CLUSTER ?= frlab
K8S_NAMESPACE ?= frlab
RELEASE ?= frlab
IMAGE_REPO ?= frlab
IMAGE_TAG ?= dev
PROFILE ?= f-full
SCENARIO ?= payment-errors
K8S_PREFIX ?= /opt/frlab-k8s
K8S_RUN ?= /tmp/frlab-k8s
IMAGE_ARCHIVE ?= target/image/$(IMAGE_REPO)-$(IMAGE_TAG).tar
CLUSTER ?= kind
# Set here, not taken from the environment: a make run by a test of `make test` must not
# inherit its parent's cluster settings (a command-line K8S_VALUES=... still wins).
ifeq ($(CLUSTER),local)
# Its kubeconfig, its values (hostNetwork, pullPolicy Never, no bundled servers) and a
# Prometheus process on the host for experiment-k8s.
export KUBECONFIG := $(K8S_RUN)/kubeconfig
K8S_VALUES := k8s/local/values.yaml
PROMETHEUS := local
else ifeq ($(CLUSTER),kind)
K8S_VALUES :=
PROMETHEUS := chart
else
$(error CLUSTER=$(CLUSTER): expected kind or local)
endif
export K8S_NAMESPACE RELEASE IMAGE_REPO IMAGE_TAG K8S_PREFIX K8S_RUN K8S_VALUES PROMETHEUS

.PHONY: chart-schema
chart-schema: ## Regenerate helm/frlab/values.schema.json from lab_values::Values (a test checks it is current)
	$(CARGO) run -q -p lab-values --bin valuesgen > helm/frlab/values.schema.json

.PHONY: kind-up
kind-up: ## Create the kind cluster (k8s/kind.yaml, node image pinned)
	kind create cluster --name $(KIND_CLUSTER) --config k8s/kind.yaml

.PHONY: images
images: ## Build the frlab image (every binary, distroless, non-root) with docker
	docker build -t $(IMAGE_REPO):$(IMAGE_TAG) .

.PHONY: kind-load
kind-load: ## Load the frlab image into the kind cluster
	kind load docker-image --name $(KIND_CLUSTER) $(IMAGE_REPO):$(IMAGE_TAG)

.PHONY: cluster-local
cluster-local: ## Local Kubernetes 1.20 on 127.0.0.1, no Docker (root): build once into K8S_PREFIX, start (kubeconfig: /tmp/frlab-k8s/kubeconfig)
	k8s/local/build.sh
	k8s/local/up.sh

.PHONY: cluster-local-down
cluster-local-down: ## Stop the local cluster, its pods and mounts (the build stays in K8S_PREFIX)
	k8s/local/down.sh

.PHONY: image-archive
image-archive: ## The frlab image without Docker: release build, then target/image/frlab-dev.tar (k8s/local/image.py)
	$(CARGO) build --release --workspace --bins
	python3 k8s/local/image.py build --bin-dir target/release --out $(IMAGE_ARCHIVE) --tag $(IMAGE_REPO):$(IMAGE_TAG)

.PHONY: image-local
image-local: image-archive ## Import the frlab image into the local cluster's containerd (what kind-load does on kind)
	python3 k8s/local/image.py import $(IMAGE_ARCHIVE)

.PHONY: deploy
deploy: ## Install or upgrade the chart with PROFILE=<name> (helm/profiles/<name>.yaml)
	@test -f helm/profiles/$(PROFILE).yaml || { echo "no helm/profiles/$(PROFILE).yaml (see helm/profiles/)"; exit 2; }
	helm upgrade --install $(RELEASE) helm/frlab --namespace $(K8S_NAMESPACE) --create-namespace \
		-f helm/profiles/$(PROFILE).yaml $(addprefix -f ,$(K8S_VALUES)) --set profileName=$(PROFILE) \
		--set image.repository=$(IMAGE_REPO) --set image.tag=$(IMAGE_TAG) --wait --timeout 10m

.PHONY: chaos
chaos: ## Apply fault scenario SCENARIO=<name> (k8s/chaos/<name>.yaml) on the cluster
	@test -f k8s/chaos/$(SCENARIO).yaml || { echo "no k8s/chaos/$(SCENARIO).yaml (see k8s/chaos/)"; exit 2; }
	kubectl --namespace $(K8S_NAMESPACE) apply -f k8s/chaos/$(SCENARIO).yaml

.PHONY: chaos-clear
chaos-clear: ## Delete every FaultInjection (the controller clears the faults first)
	kubectl --namespace $(K8S_NAMESPACE) delete faultinjections --all --wait=true --timeout=120s

.PHONY: loadtest
loadtest: ## frlab load as a Job in the cluster (RATE=50 DURATION=60s CLIENT_RETRIES=0); prints its JSON report
	k8s/loadtest.sh

.PHONY: experiment-k8s
experiment-k8s: ## One PROFILE x SCENARIO on the cluster (CLUSTER=local too); success rate, amplification from Prometheus
	k8s/experiment-k8s.sh $(PROFILE) $(SCENARIO)

.PHONY: dashboards
dashboards: ## Port-forward Grafana :3000, Prometheus :9090, Jaeger :16686 until ctrl-c
	k8s/dashboards.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: clean
clean: ## Remove build output and local data
	$(CARGO) clean
	rm -rf data
