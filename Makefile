# ESCAPE — moving-target defense for Linux containers.
# Every target that needs system packages calls `deps` first, so a fresh
# Debian 12 machine needs nothing but this repository and root.

GO      ?= go
PREFIX  ?= /opt/escape
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Integration tests share one lab, and fault tests stop its hosts on
# purpose: packages run one at a time so they never see each other's faults.
TESTFLAGS ?= -count=1 -p 1 -timeout 40m

SHELL := /bin/bash
export PATH := $(PREFIX)/bin:$(PATH)

.PHONY: all build deps kube-bins generate test test-unit bench bench-go bench-sensor bench-plane bench-plane-compare bench-rhids eval-scenarios fuzz lab-up lab-down lab-status demo doctor clean k8s-schemas image

all: build

## deps: install every system dependency (idempotent; seconds when installed)
deps:
	ESCAPE_PREFIX=$(PREFIX) tools/deps.sh

## kube-bins: build the lab's Kubernetes binaries (escape-lab up --kubernetes) once per version,
## into KUBE_CACHE; seconds when cached, about 6 min and 2 GB on 2 cores when not
KUBE_VERSION ?= v1.36.3
KUBE_CACHE ?= /var/cache/escape/kubernetes
kube-bins:
	KUBE_CACHE=$(KUBE_CACHE) tools/lab/kube_build.sh $(KUBE_VERSION)

## build: build the binaries into bin/ (needs no clang: bpf2go output is committed)
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## generate: rebuild the BPF objects and Go bindings from bpf/*.c, and the agent API from its .proto
generate: deps
	@command -v protoc >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends protobuf-compiler >/dev/null; }
	$(GO) generate ./bpf/... ./plane/agentapi/agentpb/...

## test: unit tests plus the privileged integration tests (BPF, containerd, CRIU, netns), for real.
## Where the doctor says every mode can run, a skipped test fails the run.
## Up to 3 failed tests are rerun once each; one that passes then is named FLAKY.
test: deps build kube-bins
	$(GO) vet ./...
	@mkdir -p out
	bin/escape-lab up --hosts 3 || echo "lab did not come up; the lab tests will say why"
	@if bin/escape-sensor doctor --mode all >out/doctor.txt 2>&1; then skip=-fail-on-skip; else \
	  echo "doctor: not every mode can run here; integration tests may skip:"; cat out/doctor.txt; skip=; fi; \
	set -o pipefail; $(GO) build -o out/testreport ./tools/testreport; \
	$(GO) test -json $(TESTFLAGS) ./... | out/testreport $$skip -rerun out/rerun.txt; rc=$$?; \
	if [ $$rc -ne 0 ] && [ -s out/rerun.txt ]; then \
	  echo "== rerunning each failed test once, to tell a flake from a failure (tools/testreport)"; rc=0; \
	  while IFS="$$(printf '\t')" read -r pkg pat; do \
	    echo "== rerun: $$pkg -run '$$pat'"; \
	    $(GO) test -json -count=1 -timeout 10m -run "$$pat" $$pkg </dev/null | out/testreport $$skip || rc=1; \
	  done < out/rerun.txt; \
	  if [ $$rc -eq 0 ]; then echo "FLAKY: failed once, passed on rerun:"; sed 's/^/FLAKY: /' out/rerun.txt; fi; \
	fi; \
	bin/escape-lab down; exit $$rc

## test-unit: only the tests that need no root and no lab
test-unit:
	$(GO) test -count=1 -short ./...

## fuzz: run every fuzz target briefly (FUZZTIME per target)
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: the benchmarks behind BENCHMARKS.md (results in out/)
bench: deps build bench-go bench-sensor bench-rhids
bench-go:
	@mkdir -p out
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./bags/... ./model/... | tee out/bench-go.txt
## bench-rhids: offline train against the BoSC authors' rhids (java) on a strace -f trace the bench
## records itself; RHIDS is the folder holding classifier.jar (default: ../shared/tools/rhids)
bench-rhids: build
	@mkdir -p out
	$(GO) run ./tools/bench/rhidsbench $(if $(RHIDS),--rhids $(RHIDS)) --out out/bench-rhids.md
## bench-sensor: syscall overhead, cases (a)-(g) in one run, plus redis throughput on the lab;
## then the cost on process creation (fork, exec, wait: the fork hook and cold caches)
bench-sensor: deps build
	@mkdir -p out
	bin/escape-lab up --hosts 3
	$(GO) run ./tools/bench --out out/bench-sensor.md
	$(GO) run ./tools/bench --workload spawn --out out/bench-spawn.md
## bench-plane: checkpoint, rollback and migration downtime on the networked lab (in-process plane
## dialing the agents from the plane namespace), with shared storage and streaming, against bare CRIU
## in a host; then the agent API's own cost (round trip, image streaming) against plain TCP.
## planebench brings the lab ($$ESCAPE_LAB, else the default) up with the storage each run needs.
bench-plane: deps build
	@mkdir -p out
	$(GO) run ./tools/bench/planebench -shared-storage=true -sizes 1,64,256 -reps 3 -modes staged,full | tee out/bench-plane-shared.md
	$(GO) run ./tools/bench/planebench -shared-storage=false -what plane,rpc -sizes 1,64,256 -reps 3 -modes staged,full | tee out/bench-plane-stream.md
## bench-plane-compare: the networked path against the direct path of BASE (a commit before the
## multi-host design), interleaved in ROUNDS rounds, as a table of medians and ratios
BASE ?= bf821b0
ROUNDS ?= 3
bench-plane-compare: deps build
	tools/bench/planebench/compare.sh -c $(BASE) -r $(ROUNDS) -o out/compare

## image: the OCI images of the per-host daemon and of the plane, reproducibly, without a container
## engine (out/image: OCI layouts, their archives for `ctr images import`, images.json), and the
## image: lines of deploy/kubernetes pinned to their digests (deploy/README.md, "Image")
image: deps
	$(GO) run ./tools/image --out out/image --pin deploy/kubernetes

## doctor: preflight checks with remedies
doctor: build
	bin/escape-sensor doctor

lab-up: deps build
	bin/escape-lab up --hosts 3
lab-down: build
	bin/escape-lab down
lab-status: build
	bin/escape-lab status

## eval-scenarios: the container-attack scenarios (tools/scenarios, docs/scenarios.md): each service
## from its Debian package in its own netns and cgroup, recorded with escape-sensor record, replayed
## with every scorer; table in out/scenarios/table.md. SCENARIO_NORMAL per scenario (default 3m, about
## 30 min for the 8; the issue's 1 h per service in all: SCENARIO_NORMAL=30m), SCENARIOS=a,b to pick.
SCENARIO_NORMAL ?= 3m
SCENARIOS ?=
eval-scenarios: deps build
	@mkdir -p out
	$(GO) build -o out/scenarios-runner ./tools/scenarios
	out/scenarios-runner -normal $(SCENARIO_NORMAL) $(if $(SCENARIOS),-only $(SCENARIOS))

## demo: ESCAPE's main job on the local lab (see README)
demo: deps build
	$(GO) run ./tools/demo --bin bin --out out/demo

## k8s-schemas: refresh the Kubernetes OpenAPI schemas the manifest tests use (K8S_VERSION=v1.x.y to move)
k8s-schemas:
	deploy/kubernetes/update-schemas.sh

clean:
	rm -rf bin out
