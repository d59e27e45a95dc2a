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
LDFLAGS := -X vault-plugin-registry/plugin.Version=$(VERSION)
RELAY_LDFLAGS := -X vault-plugin-registry/relay.Version=$(VERSION)

.PHONY: help build plugin relay tools test unit e2e demo bench fuzz lint clean

help:
	@echo "make build   build $(PLUGIN) and $(RELAY)"
	@echo "make plugin  build the plugin and print the command to register it"
	@echo "make relay   build the relay"
	@echo "make tools   install Vault, registries and clients (scripts/install.sh)"
	@echo "make test    install tools (scripts/install.sh), unit tests, end-to-end tests"
	@echo "make unit    unit tests only (go test -race ./...)"
	@echo "make e2e     end-to-end tests only (real Vault, registries and clients; E2E_JOBS in parallel)"
	@echo "make demo    run Vault, the plugin, the relay and a registry on loopback"
	@echo "make bench   benchmarks"
	@echo "make fuzz    each fuzz target for FUZZTIME (default $(FUZZTIME))"
	@echo "make lint    gofmt and go vet"
	@echo "make clean   remove $(BIN)/"

build: plugin relay

plugin:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(PLUGIN) ./cmd/vault-plugin-registry
	@echo "sha256 $$(sha256sum $(PLUGIN) | cut -d' ' -f1)"
	@echo "register: vault plugin register -sha256=$$(sha256sum $(PLUGIN) | cut -d' ' -f1) -version=$(VERSION) secret vault-plugin-registry"

relay:
	$(GO) build -trimpath -ldflags "$(RELAY_LDFLAGS)" -o $(RELAY) ./cmd/godoauth-relay

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

# Go benchmarks, then wrk against the real relay, Vault and plugin;
# writes bench-results.md (scripts/bench.sh).
bench: build
	VPR_BIN_DIR=$(CURDIR)/$(BIN) scripts/bench.sh

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

clean:
	rm -rf $(BIN)
