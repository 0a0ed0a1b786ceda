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
experiment: ## Main job: the quick experiment (profiles a,b,d,f,g x 3 faults) on release builds; report in results/
	$(CARGO) build --release --workspace --bins
	target/release/frlab experiment --quick

.PHONY: experiment-full
experiment-full: ## Every profile x every scenario, 3 trials (long)
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
test: tools ## Run every test (needs Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379)
	$(CARGO) nextest run --workspace --no-fail-fast

.PHONY: bench
bench: ## Benchmarks, printed as ratios to bare tonic measured in the same run
	$(CARGO) bench -p lab-resilience --bench client_stack
	$(CARGO) bench -p frlab --bench chain

.PHONY: crds
crds: ## Regenerate k8s/crds/faultinjection.yaml from the Rust type (a test checks it is current)
	$(CARGO) run -q -p chaos-controller --bin crdgen > k8s/crds/faultinjection.yaml

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
