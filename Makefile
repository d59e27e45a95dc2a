# vault-plugin-registry: a Vault plugin that mints Docker registry tokens,
# and godoauth-relay, the token endpoint registries send clients to.
# `make help` lists the targets.

VERSION   ?= v0.1.0
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
LDFLAGS := -X github.com/vault-registry/vault-plugin-registry/plugin.Version=$(VERSION)
RELAY_LDFLAGS := -X github.com/vault-registry/vault-plugin-registry/relay.Version=$(VERSION)
CREDHELPER := $(BIN)/docker-credential-vault-registry
CREDHELPER_LDFLAGS := -X github.com/vault-registry/vault-plugin-registry/credhelper.Version=$(VERSION)

.PHONY: help build plugin relay credhelper credential-provider tools test unit e2e demo demo-ha bench soak fuzz lint clean release

help:
	@echo "make build   build $(PLUGIN), $(RELAY), $(CREDHELPER) and $(CREDPROVIDER)"
	@echo "make plugin  build the plugin and print the command to register it"
	@echo "make relay   build the relay"
	@echo "make tools   install Vault, registries and clients (scripts/install.sh)"
	@echo "make test    install tools (scripts/install.sh), unit tests, end-to-end tests"
	@echo "make unit    unit tests only (go test -race ./...)"
	@echo "make e2e     end-to-end tests only (real Vault, registries and clients; E2E_JOBS in parallel)"
	@echo "make demo    run Vault, the plugin, the relay and a registry on loopback"
	@echo "make demo-ha the same on a three-node Vault Raft cluster (scripts/demo-ha.sh)"
	@echo "make bench   benchmarks, load run, profiles: bench-results.md and .png (DOCKER_AUTH_BIN=… adds docker_auth)"
	@echo "make soak    30 minutes of traffic with churn, memory and goroutines sampled (scripts/soak.sh; SOAK_DURATION=…)"
	@echo "make fuzz    each fuzz target for FUZZTIME (default $(FUZZTIME))"
	@echo "make lint    gofmt and go vet"
	@echo "make clean   remove $(BIN)/ and $(DIST)/"
	@echo "make release linux/amd64 and linux/arm64 binaries, SHA256SUMS and register lines in $(DIST)/"

build: plugin relay credhelper credential-provider

plugin:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(PLUGIN) ./cmd/vault-plugin-registry
	@echo "sha256 $$(sha256sum $(PLUGIN) | cut -d' ' -f1)"
	@echo "register: vault plugin register -sha256=$$(sha256sum $(PLUGIN) | cut -d' ' -f1) -version=$(VERSION) secret vault-plugin-registry"

relay:
	$(GO) build -trimpath -ldflags "$(RELAY_LDFLAGS)" -o $(RELAY) ./cmd/godoauth-relay

# The docker credential helper (docs/VAULT-LOGIN.md): users put it on PATH.
credhelper:
	$(GO) build -trimpath -ldflags "$(CREDHELPER_LDFLAGS)" -o $(CREDHELPER) ./cmd/docker-credential-vault-registry

# The kubelet's image credential provider (docs/KUBERNETES.md).
credential-provider:
	$(GO) build -trimpath -o $(CREDPROVIDER) ./cmd/vault-registry-credential-provider

tools:
	scripts/install.sh

# Every suite runs even when an earlier one fails, so one run shows every
# failure. Fuzzing is brief here (TEST_FUZZTIME each target); `make fuzz`
# runs longer.
TEST_FUZZTIME ?= 5s
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

demo: tools build
	scripts/demo.sh

demo-ha: tools build
	scripts/demo-ha.sh

# Go benchmarks, then wrk against the real relay, Vault and plugin (and
# docker_auth when DOCKER_AUTH_BIN names its auth_server), with profiles;
# writes bench-results.md and bench-results.png (scripts/bench.sh).
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

# Static binaries (plugin, relay, credential provider) for each architecture, their SHA256SUMS, and the exact
# `vault plugin register` line per architecture (also in $(DIST)/REGISTER).
DIST          ?= dist
RELEASE_ARCHS ?= amd64 arm64
release:
	@set -eo pipefail; rm -rf $(DIST); mkdir -p $(DIST); \
	for arch in $(RELEASE_ARCHS); do \
		echo "== linux/$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(DIST)/vault-plugin-registry_$(VERSION)_linux_$$arch ./cmd/vault-plugin-registry; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(RELAY_LDFLAGS)" \
			-o $(DIST)/godoauth-relay_$(VERSION)_linux_$$arch ./cmd/godoauth-relay; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(CREDHELPER_LDFLAGS)" \
			-o $(DIST)/docker-credential-vault-registry_$(VERSION)_linux_$$arch ./cmd/docker-credential-vault-registry; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath \
			-o $(DIST)/vault-registry-credential-provider_$(VERSION)_linux_$$arch ./cmd/vault-registry-credential-provider; \
	done; \
	cd $(DIST); sha256sum vault-plugin-registry_* godoauth-relay_* docker-credential-vault-registry_* vault-registry-credential-provider_* > SHA256SUMS; \
	for arch in $(RELEASE_ARCHS); do \
		bin=vault-plugin-registry_$(VERSION)_linux_$$arch; \
		echo "# linux/$$arch: copy $$bin into Vault's plugin_directory, then:"; \
		echo "vault plugin register -sha256=$$(sha256sum $$bin | cut -d' ' -f1) -version=$(VERSION) -command=$$bin secret vault-plugin-registry"; \
	done > REGISTER; \
	cat SHA256SUMS REGISTER
