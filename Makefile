# Every developer and CI command goes through here. See README.md.
SHELL := /bin/bash
PY := .venv/bin/python
## pytest-xdist workers for `make test`: the integration tests mostly wait on pods and
## processes, so three share two cores well (0 runs the suite in one process).
TEST_WORKERS ?= 3

.PHONY: bootstrap build cluster-up cluster-down lint crds test test-unit test-integration demo bench clean test-real-node

## Python environment in .venv (idempotent, re-run when pyproject.toml changes).
bootstrap:
	dev/bootstrap

## Build (or fetch from the cache) every binary the local cluster needs.
build: bootstrap
	dev/cluster build

cluster-up: build
	dev/cluster up

cluster-down:
	dev/cluster down

## Regenerate crds/ and the chart's copies (from the operator's pydantic models), the
## README's reference (from the CLI) and docs/api.md (from the engine's docstrings).
crds: bootstrap
	$(PY) -m rewind_operator.crdgen --out crds --chart helm/rewind/crds
	$(PY) -m dev.docgen
	$(PY) -m dev.apidoc

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

test-unit: bootstrap
	.venv/bin/pytest tests/test_engine tests/test_operator

test-integration: build
	.venv/bin/pytest tests/integration

## Everything CI runs: lint, unit and integration tests against the real local cluster
## (its node runs the project's images in containerd), then the node's own tests, which
## end with `dev/cluster down` leaving nothing behind.
test: build lint
	.venv/bin/pytest tests -n $(TEST_WORKERS)
	dev/cluster down
	.venv/bin/pytest tests_real_node

## The post-analytics upgrade story on the local cluster, told in plain words.
demo: build
	$(PY) -m dev.demo

## Benchmarks next to their ceilings (plain Python, raw boto3, bare Kafka loop), on the local cluster.
bench: cluster-up
	eval "$$(dev/cluster env)" && $(PY) bench/bench_keyed_count.py && $(PY) bench/bench_savepoint.py && $(PY) bench/bench_savepoint.py --key-shape tuple && $(PY) bench/bench_kafka.py

clean: cluster-down
	rm -rf .venv dev/.state

## The real node (containerd + runc + kubelet + kube-proxy) running the project's images;
## needs root and Debian's packages (dev/README.md). Ends with `dev/cluster down`.
test-real-node: bootstrap
	.venv/bin/pytest tests_real_node
