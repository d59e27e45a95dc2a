#!/usr/bin/env bash
# High availability on loopback: a three-node Vault cluster with
# integrated storage (scripts/vault-cluster.sh), the plugin enabled for the
# service "registry", a demo user, the relay with every node's address,
# and registry 2.8. Prints how to kill the leader while pulling; Ctrl-C
# stops everything (by PID).
#
# Run through `make demo-ha` (which builds bin/ and installs the tools).
# Ports: the Vault nodes pick free ports below 32768 (VAULT_CLUSTER_PORT to
# choose), RELAY_PORT (5001), REGISTRY_PORT (5000).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
PATH=$VPR_TOOLS/bin:$PATH
RELAY_PORT=${RELAY_PORT:-5001}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
SERVICE=registry
DEMO_USER=demo
CLUSTER=$ROOT/scripts/vault-cluster.sh

for bin in "$ROOT/bin/vault-plugin-registry" "$ROOT/bin/godoauth-relay"; do
	[ -x "$bin" ] || { echo "demo-ha: $bin missing; run 'make build'" >&2; exit 1; }
done
for tool in vault crane docker-registry curl jq; do
	command -v "$tool" >/dev/null || { echo "demo-ha: $tool missing; run scripts/install.sh" >&2; exit 1; }
done
for port in "$RELAY_PORT" "$REGISTRY_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "demo-ha: port $port is in use; set RELAY_PORT or REGISTRY_PORT" >&2
		exit 1
	fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vpr-demo-ha.XXXXXX")
DEMO=demo-ha
demo_stop_extra() { "$CLUSTER" down "$WORK/vault"; }
# shellcheck source=scripts/demo-lib.sh
. "$ROOT/scripts/demo-lib.sh"

echo "demo-ha: starting three Vault nodes with Raft storage"
PLUGIN_BIN=$ROOT/bin/vault-plugin-registry PLUGIN_VERSION=${VERSION:-v0.1.0} MOUNTS=$SERVICE \
	"$CLUSTER" up "$WORK/vault" 3
leader=$("$CLUSTER" leader "$WORK/vault")
api_port=$(sed -n "${leader}p" "$WORK/vault/ports" | cut -d' ' -f1)
export VAULT_ADDR=http://127.0.0.1:$api_port
VAULT_TOKEN=$(jq -r .root_token "$WORK/vault/init.json")
export VAULT_TOKEN

PASSWORD=$(random)
vault write -f "$SERVICE/ca/generate" >/dev/null
curl -sf "$VAULT_ADDR/v1/$SERVICE/ca/pem" >"$WORK/bundle.pem"
vault write "$SERVICE/users/$DEMO_USER" password="$PASSWORD" access='repository:${user}/**:*' >/dev/null

addresses=$(awk '{ printf "%s\"http://127.0.0.1:%s\"", (NR > 1 ? ", " : ""), $1 }' "$WORK/vault/ports")
start_relay "    addresses: [$addresses]
    timeout: 3s" 20s
start_registry

R=localhost:$REGISTRY_PORT
cat <<EOF

Ready: Vault nodes $(awk '{ printf "127.0.0.1:%s ", $1 }' "$WORK/vault/ports")(leader: node$leader).
In another shell:

  export PATH=$VPR_TOOLS/bin:\$PATH DOCKER_CONFIG=$WORK/docker
  crane auth login $R -u $DEMO_USER -p $PASSWORD
  crane append -f /etc/hostname -t $R/$DEMO_USER/hello:v1
  while sleep 0.2; do crane digest $R/$DEMO_USER/hello:v1 || echo FAILED; done

and in a third one, kill the leader and watch the loop go on:

  $CLUSTER kill $WORK/vault \$($CLUSTER leader $WORK/vault)
  curl -s http://127.0.0.1:$RELAY_PORT/healthz; echo
  curl -s http://127.0.0.1:$RELAY_PORT/metrics | grep failovers
  $CLUSTER start $WORK/vault N     # start node N again and unseal it

Root token and unseal keys (a demo's): $WORK/vault/init.json
Logs: $WORK/{relay,registry}.log $WORK/vault/node*/vault.log
Press Ctrl-C to stop.
EOF

set +e
wait -n "${PIDS[@]}"
echo "demo-ha: a server exited" >&2
tail -n 20 "$WORK"/*.log >&2
exit 1
