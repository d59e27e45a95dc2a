# vault-plugin-registry: a Vault plugin that mints Docker registry tokens,
# and godoauth-relay, the token endpoint registries send clients to.
# `make help` lists the targets.

# On a release tag (git describe --tags --exact-match), the tag; else the
# default below. `make VERSION=…` overrides both.
DEFAULT_VERSION := v0.1.0
VERSION   ?= $(or $(shell git describe --tags --exact-match 2>/dev/null),$(DEFAULT_VERSION))
GO        ?= go
FUZZTIME  ?= 30s
E2E_TIMEOUT ?= 45m
VPR_TOOLS ?= $(HOME)/.cache/vpr-tools

SHELL := /bin/bash

export VPR_TOOLS
export PATH := $(VPR_TOOLS)/bin:$(PATH)

BIN     := bin
PLUGIN  := $(BIN)/vault-plugin-registry
RELAY   := $(BIN)/godoauth-relay
CREDPROVIDER := $(BIN)/vault-registry-credential-provider
MODULE  := github.com/vault-registry/vault-plugin-registry
LDFLAGS := -X $(MODULE)/plugin.Version=$(VERSION)
RELAY_LDFLAGS := -X $(MODULE)/relay.Version=$(VERSION)
CREDHELPER := $(BIN)/docker-credential-vault-registry
CREDHELPER_LDFLAGS := -X $(MODULE)/credhelper.Version=$(VERSION)
# Every command of a release: the version package's Release (any command),
# and each command's own Version (a -X of a package a command does not
# link is ignored).
RELEASE_LDFLAGS := -X $(MODULE)/version.Release=$(VERSION) $(LDFLAGS) $(RELAY_LDFLAGS) $(CREDHELPER_LDFLAGS)

.PHONY: help build plugin relay credhelper credential-provider tools demo-tools test unit e2e demo demo-ha bench soak fuzz lint clean release image

help:
	@echo "make build   build $(PLUGIN), $(RELAY), $(CREDHELPER) and $(CREDPROVIDER) (static, as released)"
	@echo "make plugin  build the plugin and print the command to register it"
	@echo "make relay   build the relay"
	@echo "make tools   install Vault, registries and clients for the tests (scripts/install.sh)"
	@echo "make test    install tools (scripts/install.sh), unit tests, end-to-end tests"
	@echo "make unit    unit tests only (go test -race ./...)"
	@echo "make e2e     end-to-end tests only (real Vault, registries and clients; E2E_JOBS in parallel)"
	@echo "make demo    run Vault, the plugin, the relay and a registry on loopback (installs only those)"
	@echo "make demo-ha the same on a three-node Vault Raft cluster (scripts/demo-ha.sh)"
	@echo "make bench   benchmarks, load run, profiles: docs/bench-results.md and .png (DOCKER_AUTH_BIN=… adds docker_auth)"
	@echo "make soak    30 minutes of traffic with churn, memory and goroutines sampled (scripts/soak.sh; SOAK_DURATION=…)"
	@echo "make fuzz    each fuzz target for FUZZTIME (default $(FUZZTIME))"
	@echo "make lint    gofmt and go vet"
	@echo "make clean   remove $(BIN)/ and $(DIST)/"
	@echo "make release every command under cmd/ for linux/amd64 and linux/arm64, SHA256SUMS and REGISTER in $(DIST)/"
	@echo "make image   the relay's container image from $(DIST)/ (deploy/docker/Dockerfile; after make release)"

build: plugin relay credhelper credential-provider

# Static (CGO_ENABLED=0) and -trimpath, as `make release` builds them, so
# the plugin copied into Vault's plugin directory also runs on musl hosts
# (Vault's official image).
STATIC := CGO_ENABLED=0

plugin:
	$(STATIC) $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(PLUGIN) ./cmd/vault-plugin-registry
	@echo "sha256 $$(sha256sum $(PLUGIN) | cut -d' ' -f1)"
	@echo "register: vault plugin register -sha256=$$(sha256sum $(PLUGIN) | cut -d' ' -f1) -version=$(VERSION) secret vault-plugin-registry"

relay:
	$(STATIC) $(GO) build -trimpath -ldflags "$(RELAY_LDFLAGS)" -o $(RELAY) ./cmd/godoauth-relay

# The docker credential helper (docs/VAULT-LOGIN.md): users put it on PATH.
credhelper:
	$(STATIC) $(GO) build -trimpath -ldflags "$(CREDHELPER_LDFLAGS)" -o $(CREDHELPER) ./cmd/docker-credential-vault-registry

# The kubelet's image credential provider (docs/KUBERNETES.md).
credential-provider:
	$(STATIC) $(GO) build -trimpath -ldflags "-X $(MODULE)/version.Release=$(VERSION)" -o $(CREDPROVIDER) ./cmd/vault-registry-credential-provider

tools:
	scripts/install.sh

# What the demo runs, no more: Vault (a `vault` on PATH when its version
# fits), registry 2.8, crane and curl.
demo-tools:
	scripts/install.sh --demo

# Every suite runs even when an earlier one fails, so one run shows every
# failure. Fuzzing is brief here (TEST_FUZZTIME each target); `make fuzz`
# runs longer.
# A count, not a duration: Go 1.26's fuzz coordinator can fail a target
# with a bare "context deadline exceeded" when a duration ends while a
# worker is busy (golang/go#75804, fixed in Go 1.27); a count has no
# deadline. 10,000 inputs take 1 to 7 s a target on two idle cores.
TEST_FUZZTIME ?= 10000x
test: tools
	@rc=0; $(MAKE) --no-print-directory unit || rc=1; \
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME) || rc=1; \
	$(MAKE) --no-print-directory e2e || rc=1; exit $$rc

unit:
	$(GO) test -race ./...

# VPR_BIN_DIR makes the tests use what `build` just made. scripts/e2e.sh
# runs the test families in E2E_JOBS parallel processes (E2E_RUN narrows).
E2E_JOBS ?= 3
e2e: build
	VPR_BIN_DIR=$(CURDIR)/$(BIN) E2E_JOBS=$(E2E_JOBS) E2E_TIMEOUT=$(E2E_TIMEOUT) scripts/e2e.sh

demo: demo-intro demo-tools build
	scripts/demo.sh

.PHONY: demo-intro
demo-intro:
	@echo "make demo: the first run installs Vault, registry 2.8, crane and curl. Building Vault from source"
	@echo "  takes 10-20 minutes on two quiet cores, more on a busy machine (skipped when a vault $(DEMO_VAULT_MIN)+ is on PATH);"
	@echo "  later runs start in seconds. Progress is printed while it builds."
DEMO_VAULT_MIN := 1.21
export DEMO_VAULT_MIN

demo-ha: tools build
	scripts/demo-ha.sh

# Go benchmarks, then wrk against the real relay, Vault and plugin (and
# docker_auth when DOCKER_AUTH_BIN names its auth_server), with profiles;
# writes docs/bench-results.md and docs/bench-results.png (scripts/bench.sh).
bench: build
	VPR_BIN_DIR=$(CURDIR)/$(BIN) scripts/bench.sh

# Not part of `make test`: half an hour of traffic with churn, sampling the
# relay's and the plugin's memory and goroutines (scripts/soak.sh).
soak: build
	VPR_BIN_DIR=$(CURDIR)/$(BIN) scripts/soak.sh

# `go test -list` prints each package's fuzz targets, then "ok <package>".
fuzz:
	@set -eo pipefail; \
	targets=$$($(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { names = names " " $$1 } \
		/^ok / { n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2 "," a[i]; names = "" }'); \
	if [ -z "$$targets" ]; then echo "no fuzz targets"; exit 0; fi; \
	for t in $$targets; do \
		pkg=$${t%,*}; name=$${t#*,}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(GO) vet -tags "e2e bench" ./e2e/...
	$(GO) vet -tags "e2e soak" ./e2e/...

clean:
	rm -rf $(BIN) $(DIST)

# Static binaries of every command under cmd/ for each architecture, their
# SHA256SUMS, and the exact `vault plugin register` line per architecture
# (also in $(DIST)/REGISTER): what a tag publishes. VERSION is the tag when
# HEAD is one; every command is stamped with it (RELEASE_LDFLAGS).
DIST          ?= dist
RELEASE_ARCHS ?= amd64 arm64
release:
	@set -eo pipefail; rm -rf $(DIST); mkdir -p $(DIST); \
	cmds=$$(cd cmd && ls -d */ | tr -d /); \
	for arch in $(RELEASE_ARCHS); do \
		for c in $$cmds; do \
			echo "== $$c linux/$$arch"; \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(RELEASE_LDFLAGS)" \
				-o $(DIST)/$${c}_$(VERSION)_linux_$$arch ./cmd/$$c; \
		done; \
	done; \
	cd $(DIST); sha256sum *_linux_* > SHA256SUMS; \
	for arch in $(RELEASE_ARCHS); do \
		bin=vault-plugin-registry_$(VERSION)_linux_$$arch; \
		echo "# linux/$$arch: copy $$bin into Vault's plugin_directory, then:"; \
		echo "vault plugin register -sha256=$$(sha256sum $$bin | cut -d' ' -f1) -version=$(VERSION) -command=$$bin secret vault-plugin-registry"; \
	done > REGISTER; \
	cat SHA256SUMS REGISTER

# The relay's image from `make release`'s output (deploy/docker/Dockerfile),
# built from the repository root for this machine's architecture.
IMAGE ?= godoauth-relay:$(VERSION)
image:
	docker build -f deploy/docker/Dockerfile --build-arg VERSION=$(VERSION) \
		--build-arg TARGETARCH=$$($(GO) env GOARCH) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null) -t $(IMAGE) .
