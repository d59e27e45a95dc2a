#!/usr/bin/env bash
# Runs the product on loopback, the way an operator would set it up:
# Vault (dev mode, in memory) with the plugin registered and enabled for the
# service "registry", a demo user, the relay with a token that may only mint
# registry tokens, and registry 2.8 with token auth. Prints the commands to
# push and pull with crane, then waits; Ctrl-C stops everything.
#
# Run through `make demo` (which builds bin/ and installs the tools first).
# Ports: VAULT_PORT (8200), RELAY_PORT (5001), REGISTRY_PORT (5000).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
PATH=$VPR_TOOLS/bin:$PATH
VAULT_PORT=${VAULT_PORT:-8200}
RELAY_PORT=${RELAY_PORT:-5001}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
SERVICE=registry
PLUGIN=vault-plugin-registry
PLUGIN_VERSION=${VERSION:-v0.1.0}
DEMO_USER=demo

for bin in "$ROOT/bin/$PLUGIN" "$ROOT/bin/godoauth-relay"; do
	[ -x "$bin" ] || { echo "demo: $bin missing; run 'make build'" >&2; exit 1; }
done
for tool in vault crane docker-registry curl; do
	command -v "$tool" >/dev/null || { echo "demo: $tool missing; run scripts/install.sh" >&2; exit 1; }
done
for port in "$VAULT_PORT" "$((VAULT_PORT + 1))" "$RELAY_PORT" "$REGISTRY_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "demo: port $port is in use; set VAULT_PORT, RELAY_PORT or REGISTRY_PORT" >&2
		exit 1
	fi
done

random() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vpr-demo.XXXXXX")
PIDS=()

stop() {
	trap - INT TERM EXIT
	echo "demo: stopping"
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill "${PIDS[i]}" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
	echo "demo: stopped"
}
trap stop EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# wait_http NAME URL STATUS: until URL answers STATUS (30 s at most).
wait_http() {
	local name=$1 url=$2 want=$3 code
	for _ in $(seq 300); do
		code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
		[ "$code" = "$want" ] && return 0
		sleep 0.1
	done
	echo "demo: $name did not answer $want at $url (last: $code); log:" >&2
	tail -n 30 "$WORK/$name.log" >&2
	exit 1
}

ROOT_TOKEN=$(random)
PASSWORD=$(random)
export VAULT_ADDR=http://127.0.0.1:$VAULT_PORT VAULT_TOKEN=$ROOT_TOKEN
mkdir -p "$WORK/plugins" "$WORK/home" "$WORK/docker"

echo "demo: starting Vault on $VAULT_ADDR"
cp "$ROOT/bin/$PLUGIN" "$WORK/plugins/$PLUGIN"
HOME=$WORK/home vault server -dev -dev-root-token-id="$ROOT_TOKEN" \
	-dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-plugin-dir="$WORK/plugins" \
	>"$WORK/vault.log" 2>&1 &
PIDS+=($!)
wait_http vault "$VAULT_ADDR/v1/sys/health" 200

echo "demo: registering the plugin and enabling it at $SERVICE/"
sum=$(sha256sum "$WORK/plugins/$PLUGIN" | cut -d' ' -f1)
vault plugin register -sha256="$sum" -version="$PLUGIN_VERSION" secret "$PLUGIN" >/dev/null
vault secrets enable -path="$SERVICE" -plugin-version="$PLUGIN_VERSION" "$PLUGIN" >/dev/null
if [ "$(curl -s -o /dev/null -w '%{http_code}' "$VAULT_ADDR/v1/$SERVICE/ca/pem")" != 200 ]; then
	vault write -f "$SERVICE/ca/generate" >/dev/null
fi
curl -sf "$VAULT_ADDR/v1/$SERVICE/ca/pem" >"$WORK/bundle.pem"
vault write "$SERVICE/users/$DEMO_USER" password="$PASSWORD" \
	access='repository:${user}/**:*;registry:catalog:*' >/dev/null

echo "demo: starting the relay on 127.0.0.1:$RELAY_PORT"
vault policy write registry-relay - >/dev/null <<EOF
path "$SERVICE/token" { capabilities = ["update"] }
path "$SERVICE/token/refresh" { capabilities = ["update"] }
path "$SERVICE/token/batch" { capabilities = ["update"] }
EOF
relay_token=$(vault token create -policy=registry-relay -no-default-policy -field=token)
cat >"$WORK/godoauth.yaml" <<EOF
---
version: 0.1
log:
  level: info
storage:
  vault:
    proto: http
    host: 127.0.0.1
    port: $VAULT_PORT
    auth_token: $relay_token
    timeout: 5s
http:
  addr: 127.0.0.1:$RELAY_PORT
  timeout: 10s
token:
  issuer: Token
  expiration: 300
EOF
# Without VAULT_TOKEN and VAULT_ADDR, which would override the file: the
# relay runs with its own token, never the root token.
env -u VAULT_TOKEN -u VAULT_ADDR "$ROOT/bin/godoauth-relay" -config "$WORK/godoauth.yaml" >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
wait_http relay "http://127.0.0.1:$RELAY_PORT/healthz" 200

echo "demo: starting registry 2.8 on localhost:$REGISTRY_PORT"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  secret: $(random)
auth:
  token:
    realm: http://localhost:$RELAY_PORT/auth
    service: $SERVICE
    issuer: Token
    rootcertbundle: $WORK/bundle.pem
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
wait_http registry "http://127.0.0.1:$REGISTRY_PORT/v2/" 401

echo "Hello from vault-plugin-registry" >"$WORK/hello.txt"
tar -cf "$WORK/hello.tar" -C "$WORK" hello.txt
R=localhost:$REGISTRY_PORT

cat <<EOF

Ready. In another shell:

  export PATH=$VPR_TOOLS/bin:\$PATH DOCKER_CONFIG=$WORK/docker
  crane auth login $R -u $DEMO_USER -p $PASSWORD
  crane append -f $WORK/hello.tar -t $R/$DEMO_USER/hello:v1
  crane export $R/$DEMO_USER/hello:v1 - | tar -xOf - hello.txt
  crane catalog $R
  crane append -f $WORK/hello.tar -t $R/someone-else/hello:v1   # refused

Vault (root token, for looking around):

  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$ROOT_TOKEN
  vault read $SERVICE/users/$DEMO_USER
  vault path-help $SERVICE/token

Logs: $WORK/{vault,relay,registry}.log
Press Ctrl-C to stop.
EOF

# Until Ctrl-C, or until one of the servers dies.
set +e
wait -n "${PIDS[@]}"
echo "demo: a server exited; see the logs above" >&2
tail -n 20 "$WORK"/*.log >&2
exit 1
