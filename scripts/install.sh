#!/usr/bin/env bash
# Installs what the end-to-end tests, the demo and the benchmarks need:
# a Vault server, registry 2.8 (Debian's docker-registry), registry v3
# (distribution), and the clients crane, oras, regctl, skopeo, podman,
# buildah, helm, cosign and crictl, plus wrk.
#
# Idempotent: what it builds is cached under $VPR_TOOLS (default
# ~/.cache/vpr-tools), keyed by version, so a second run takes seconds.
# Go-built tools land in $VPR_TOOLS/bin; apt packages in /usr/bin.
#
# Needs: Debian, root (or sudo), Go, the Go module proxy and Debian's apt
# repositories.
set -euo pipefail

VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
BIN=$VPR_TOOLS/bin
STAMPS=$VPR_TOOLS/stamps
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAULTBUILD=$ROOT/scripts/vaultbuild

# Go tools: name, package@version. Bump a version here and the next run
# reinstalls that tool.
GO_TOOLS=(
	"crane github.com/google/go-containerregistry/cmd/crane@v0.22.1"
	"oras oras.land/oras/cmd/oras@v1.3.6"
	"regctl github.com/regclient/regclient/cmd/regctl@v0.11.7"
	"registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
	# helm lints and renders deploy/helm; crictl pulls through containerd's
	# CRI as the kubelet does (the kubelet credential provider's test).
	"helm helm.sh/helm/v4/cmd/helm@v4.3.2"
	"cosign github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5"
	"crictl sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0"
)
# apt packages: docker-registry is distribution 2.8; curl fetches the CA
# bundle in the demo; make runs the Makefile; gcc and libc6-dev are what
# `go test -race` needs (cgo). docker.io and containerd are the two clients
# most people use (the tests run their daemons on their own sockets); slapd
# and ldap-utils are the LDAP server behind Vault's ldap auth method in the
# tests; gnuplot-nox draws make bench's picture; prometheus brings promtool,
# which checks and tests deploy/prometheus's alert rules; systemd brings
# systemd-analyze, which verifies deploy/systemd's units (no service runs).
APT_PACKAGES=(docker-registry skopeo wrk curl ca-certificates make gcc libc6-dev
	docker.io containerd slapd ldap-utils gnuplot-nox prometheus systemd)
# jq: scripts/vault-cluster.sh reads Vault's JSON answers.
APT_PACKAGES+=(jq)
# podman and buildah: the containers/storage clients (the tests run them
# as root on vfs storage of their own; no service); e2e TestRobots_clients
# logs podman in with a robot's dockerconfigjson as its --authfile.
APT_PACKAGES+=(podman buildah)

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
	PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || { echo "install.sh: go not found (expected in PATH or /usr/local/go/bin)" >&2; exit 1; }

SUDO=
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

log() { printf 'install.sh: %s\n' "$*"; }

# timed NAME CMD...: runs CMD and says how long it took.
timed() {
	local name=$1 start=$SECONDS
	shift
	"$@"
	log "$name: done in $((SECONDS - start))s"
}

install_apt() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "apt: ${APT_PACKAGES[*]} already installed"
	else
		log "apt: installing ${missing[*]}"
		$SUDO apt-get update -qq
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	fi
	stop_registry_service
}

# The docker-registry package may start a system service on :5000. Tests and
# demo run their own registries in the foreground, so stop it (by its pid
# file or its service manager) and keep it from starting at boot.
stop_registry_service() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		if systemctl is-enabled --quiet docker-registry.service 2>/dev/null ||
			systemctl is-active --quiet docker-registry.service 2>/dev/null; then
			log "apt: stopping and disabling the docker-registry system service"
			$SUDO systemctl disable --now docker-registry.service
		fi
		# Only promtool of the prometheus package is used.
		if systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
			log "apt: stopping and disabling the prometheus system service"
			$SUDO systemctl disable --now prometheus.service
		fi
		return
	fi
	local pidfile=/var/run/docker-registry.pid pid
	if [ -f "$pidfile" ]; then
		pid=$(cat "$pidfile")
		if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q docker-registry; then
			log "apt: stopping the docker-registry service (pid $pid)"
			$SUDO kill "$pid"
		fi
		$SUDO rm -f "$pidfile"
	fi
	if command -v update-rc.d >/dev/null && ls /etc/rc[2-5].d/S*docker-registry >/dev/null 2>&1; then
		$SUDO update-rc.d docker-registry disable >/dev/null 2>&1 || true
	fi
}

# Vault is built from scripts/vaultbuild, a module of its own so the
# product's module graph never includes Vault's server.
install_vault() {
	local version
	version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "github.com/hashicorp/vault") { v = $(i + 1); sub(/^v/, "", v); print v; exit } }' "$VAULTBUILD/go.mod")
	[ -n "$version" ] || { echo "install.sh: no github.com/hashicorp/vault requirement in $VAULTBUILD/go.mod" >&2; exit 1; }
	local target=$VPR_TOOLS/vault-$version
	if [ -x "$target" ] && "$target" version >/dev/null 2>&1; then
		log "vault $version: cached"
	else
		log "vault $version: building (takes several minutes the first time)"
		(cd "$VAULTBUILD" && go build -mod=readonly -buildvcs=false -trimpath -ldflags "-s -w" -o "$target.tmp" .)
		mv -f "$target.tmp" "$target"
	fi
	ln -sfn "$target" "$BIN/vault"
}

install_go_tools() {
	local entry name pkg version stamp
	for entry in "${GO_TOOLS[@]}"; do
		read -r name pkg <<<"$entry"
		version=${pkg##*@}
		stamp=$STAMPS/$name@$version
		if [ -f "$stamp" ] && [ -x "$BIN/$name" ]; then
			log "$name $version: cached"
			continue
		fi
		log "$name $version: go install $pkg"
		# Outside the repository, so the project's go.mod plays no part.
		(
			cd "$VPR_TOOLS"
			export GOBIN=$BIN GOFLAGS=
			timed "$name $version" go install "$pkg"
		)
		rm -f "$STAMPS/$name@"*
		touch "$stamp"
	done
}

main() {
	local start=$SECONDS
	mkdir -p "$BIN" "$STAMPS"
	timed apt install_apt
	timed vault install_vault
	install_go_tools
	log "all tools ready in $((SECONDS - start))s; add $BIN to PATH"
}

main "$@"
