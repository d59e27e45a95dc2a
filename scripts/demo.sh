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

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vpr-demo.XXXXXX")
DEMO=demo
# shellcheck source=scripts/demo-lib.sh
. "$ROOT/scripts/demo-lib.sh"

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
start_relay "    proto: http
    host: 127.0.0.1
    port: $VAULT_PORT
    timeout: 5s" 10s

echo "demo: starting registry 2.8 on localhost:$REGISTRY_PORT"
start_registry

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
