# Cluster paths (docs/cluster.md): a kind cluster with KEDA and this chart, its tests, Flower.
# Included by the top-level Makefile; every knob can be overridden: `make kind-up CLUSTER_NAME=dev`.

include k8s-tests/cluster/versions.env

CLUSTER_NAME ?= celery-stack
KIND_CONFIG ?= k8s-tests/cluster/kind.yaml
RELEASE ?= celery-stack
NAMESPACE ?= celery-stack
CHART ?= charts/celery-stack
KIND_VALUES ?= values-examples/kind.yaml
KEDA_NAMESPACE ?= keda
# The image kind loads: repository and tag as the kind values name them, never `latest`, so with
# pullPolicy IfNotPresent the nodes use the loaded image and never try a registry.
IMAGE_REPOSITORY ?= $(shell sed -n '/^image:/,/^[^ ]/s/^  repository: *//p' $(KIND_VALUES))
IMAGE_TAG ?= $(shell sed -n '/^image:/,/^[^ ]/s/^  tag: *//p' $(KIND_VALUES))
IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
KIND_WAIT ?= 10m
# Flower's port from the one source of ports (app/portfolio_site/ports.py).
# (run_path: that file alone, without importing the portfolio_site package and so Celery)
FLOWER_PORT ?= $(shell python3 -c "import runpy; print(runpy.run_path('app/portfolio_site/ports.py')['FLOWER_PORT'])")
K8S_TESTS_ARGS ?=

# One clear line per missing tool (all of them at once), no stack trace.
REQUIRE = /bin/sh k8s-tests/cluster/require-tools.sh

.PHONY: kind-up kind-image kind-keda kind-install kind-wait kind-test kind-down flower

kind-up: ## Create the kind cluster, build + load the image, install KEDA and the chart, wait until ready
	@if [ "$(IMAGE_TAG)" = "latest" ] || [ -z "$(IMAGE_TAG)" ]; then \
	  echo "error: IMAGE_TAG must be a fixed tag, not '$(IMAGE_TAG)' (kind would try to pull it)" >&2; exit 2; fi
	@$(REQUIRE) kind docker helm kubectl
	@if kind get clusters 2>/dev/null | grep -qx '$(CLUSTER_NAME)'; then \
	  echo "kind cluster $(CLUSTER_NAME) exists"; \
	else \
	  echo kind create cluster --name $(CLUSTER_NAME) --config $(KIND_CONFIG) --image $(KIND_NODE_IMAGE) --wait 120s; \
	  kind create cluster --name $(CLUSTER_NAME) --config $(KIND_CONFIG) --image $(KIND_NODE_IMAGE) --wait 120s; \
	fi
	kubectl config use-context kind-$(CLUSTER_NAME)
	$(MAKE) --no-print-directory kind-image kind-keda kind-install kind-wait

kind-image: ## Build the image and load it into the kind cluster
	@$(REQUIRE) kind docker
	docker build -f docker/Dockerfile -t $(IMAGE) .
	kind load docker-image $(IMAGE) --name $(CLUSTER_NAME)

kind-keda: ## Install KEDA from its Helm chart (pinned in k8s-tests/cluster/versions.env)
	@$(REQUIRE) helm kubectl
	helm repo add kedacore https://kedacore.github.io/charts --force-update
	helm upgrade --install keda kedacore/keda --version $(KEDA_CHART_VERSION) \
	  --namespace $(KEDA_NAMESPACE) --create-namespace --wait --timeout $(KIND_WAIT)

# No --wait here: kind-wait waits for every StatefulSet and Deployment (their pods wait in an init
# container for the revision's migration Job). `--wait` would work too, with the default plain Job.
kind-install: ## Install (or upgrade) this chart with the kind values and the loaded image
	@$(REQUIRE) helm kubectl
	helm upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) --create-namespace \
	  -f $(KIND_VALUES) --set image.repository=$(IMAGE_REPOSITORY) --set image.tag=$(IMAGE_TAG) \
	  --timeout $(KIND_WAIT)

kind-wait: ## Wait until every Deployment and StatefulSet of the release is ready
	@$(REQUIRE) kubectl
	for sts in $$(kubectl --namespace $(NAMESPACE) get statefulset -l app.kubernetes.io/instance=$(RELEASE) -o name); do \
	  kubectl --namespace $(NAMESPACE) rollout status $$sts --timeout=$(KIND_WAIT) || exit 1; done
	kubectl --namespace $(NAMESPACE) wait deployment -l app.kubernetes.io/instance=$(RELEASE) \
	  --for=condition=Available --timeout=$(KIND_WAIT)
	kubectl --namespace $(NAMESPACE) get pods -l app.kubernetes.io/instance=$(RELEASE) -o wide

kind-test: ## Run k8s-tests/ against the release in the current kube context
	@$(REQUIRE) kubectl helm
	K8S_TESTS_REQUIRED=1 K8S_TESTS_RELEASE=$(RELEASE) K8S_TESTS_NAMESPACE=$(NAMESPACE) \
	  K8S_TESTS_VALUES=$(KIND_VALUES) $(UV) run --frozen pytest k8s-tests -v -rs $(K8S_TESTS_ARGS)

kind-down: ## Delete the kind cluster
	@$(REQUIRE) kind
	kind delete cluster --name $(CLUSTER_NAME)

flower: ## Port-forward Flower to localhost and print its login (read from the release's Secret)
	@$(REQUIRE) kubectl
	PYTHONPATH=k8s-tests $(UV) run --frozen python -m k8s_support.cli flower \
	  --release $(RELEASE) --namespace $(NAMESPACE) --local-port $(FLOWER_PORT)

# ---------------------------------------------------------------------------------------------------
# The local cluster (docs/cluster.md): single-node Kubernetes as host processes, every binary built
# from its Go module into ~/.cache/celery-stack, every image made locally. Needs root; no registry.
LOCAL_CLUSTER = PYTHONPATH=k8s-tests:. $(UV) run --frozen python -m localcluster
CLUSTER_TEST_ARGS ?=

.PHONY: cluster-up cluster-test cluster-down cluster-status cluster-bench

cluster-up: bootstrap ## Build (cached) and start the local cluster with CoreDNS, metrics-server and KEDA
	$(LOCAL_CLUSTER) up

cluster-test: bootstrap ## Install the chart on the local cluster (helm v3, helm v4, Sentinel mode) and run k8s-tests
	PYTHONPATH=k8s-tests:. $(UV) run --frozen python -m localcluster.suite $(CLUSTER_TEST_ARGS)

cluster-down: bootstrap ## Stop the local cluster and remove its processes, mounts, rules and state
	$(LOCAL_CLUSTER) down

cluster-status: bootstrap ## What of the local cluster runs, and what cluster-down would remove
	$(LOCAL_CLUSTER) status

cluster-bench: bootstrap ## KEDA's reaction to a burst and drain time autoscaled vs one replica (the installed release)
	KUBECONFIG=$${KUBECONFIG:-/var/lib/celery-stack-cluster/kubeconfig} $(UV) run --frozen python k8s-tests/bench_autoscaling.py

# Live development on the local cluster (README "Live development"): Tilt from .tools/, aimed at the
# cluster, its dockerd and its registry by the env.sh that `make cluster-up` writes.
CLUSTER_ENV ?= /var/lib/celery-stack-cluster/env.sh
TILT_NAMESPACE ?= celery-stack-tilt
.PHONY: tilt-up tilt-ci tilt-test

TILT_BUILD = PYTHONPATH=. $(UV) run --frozen python -m tests.support.tools tilt >/dev/null

tilt-up: bootstrap ## `tilt up` against the local cluster (after `make cluster-up`)
	$(TILT_BUILD)
	. $(CLUSTER_ENV) && tilt up

tilt-ci: bootstrap ## `tilt ci` against the local cluster: every resource ready, then exit
	$(TILT_BUILD)
	. $(CLUSTER_ENV) && tilt ci

tilt-test: bootstrap ## tilt ci, live update, rebuild on a dependency change and `make flower`, on the local cluster
	$(TILT_BUILD)
	. $(CLUSTER_ENV) && K8S_TESTS_REQUIRED=1 K8S_TESTS_TILT=1 K8S_TESTS_NAMESPACE=$(TILT_NAMESPACE) K8S_TESTS_RELEASE=$(RELEASE) \
	  $(UV) run --frozen pytest k8s-tests/test_tilt.py -m tilt -v
