#!/usr/bin/env bash
# A Vault cluster with integrated storage (Raft) on loopback, built the way
# an operator builds one: each node from its own config file, initialised
# with Shamir keys, unsealed, joined with `vault operator raft join`, and
# the plugin registered once in the catalog by sha256 and version (the
# same binary in every node's plugin directory). Used by `make demo-ha`
# and by the end-to-end tests (e2e/cluster_test.go); N=1 is a single-node
# Raft server.
#
#   vault-cluster.sh up DIR [N]     create and start N nodes (default 3)
#   vault-cluster.sh down DIR       stop every node (by PID), keep DIR
#   vault-cluster.sh start DIR I    start node I again and unseal it
#   vault-cluster.sh launch DIR I   start node I again, sealed
#   vault-cluster.sh stop DIR I     SIGTERM node I (and its plugin processes)
#   vault-cluster.sh kill DIR I     SIGKILL node I (and its plugin processes)
#   vault-cluster.sh unseal DIR I   unseal node I
#   vault-cluster.sh leader DIR     print the number of the active node
#   vault-cluster.sh voters DIR     print how many voters the cluster has
#
# DIR holds one directory per node (config, data, plugins, TMPDIR, log,
# pid), init.json (the unseal keys and the root token: a test cluster's,
# kept in a file readable by its owner only) and ports.
#
# Environment:
#   PLUGIN_BIN          the plugin binary (required by up)
#   PLUGIN_VERSION      its version for the catalog (default v0.1.0)
#   MOUNTS              services to enable the plugin at (default: none)
#   RAFT_PERFORMANCE_MULTIPLIER  1 (default here: elections in 2-3 s) or
#                       empty for Vault's default, 5, as production runs
#                       (a lost leader is replaced in 10-15 s)
#   VAULT_CLUSTER_PORT  first port (default: a random free run below
#                       32768, so a restarted node finds its ports free)
#   VAULT_LOG_LEVEL     default warn
set -euo pipefail

PLUGIN=vault-plugin-registry
PLUGIN_VERSION=${PLUGIN_VERSION:-v0.1.0}
PERF=${RAFT_PERFORMANCE_MULTIPLIER-1}
LOG_LEVEL=${VAULT_LOG_LEVEL:-warn}
KEY_SHARES=3
KEY_THRESHOLD=2
# Autopilot promotes a joined node to voter after this long (default 10s).
STABILIZATION=3s

die() { echo "vault-cluster: $*" >&2; exit 1; }

command -v vault >/dev/null || die "vault is not installed (scripts/install.sh)"
command -v jq >/dev/null || die "jq is not installed"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

api_port() { sed -n "${2}p" "$1/ports" | cut -d' ' -f1; }
addr() { echo "http://127.0.0.1:$(api_port "$1" "$2")"; }
root_token() { jq -r .root_token "$1/init.json"; }
nodes() { wc -l <"$1/ports"; }

v() { # v DIR I vault-args...: the vault CLI against node I
	local dir=$1 i=$2
	shift 2
	local token=""
	[ -f "$dir/init.json" ] && token=$(root_token "$dir")
	HOME=$dir/node$i/home TMPDIR=$dir/node$i/tmp VAULT_ADDR=$(addr "$dir" "$i") VAULT_TOKEN=$token vault "$@"
}

health() { # health DIR I: sys/health's status code, 000 when nothing answers
	curl -s -o /dev/null -m 2 -w '%{http_code}' "$(addr "$1" "$2")/v1/sys/health" || true
}

wait_until() { # wait_until SECONDS WHAT COMMAND...
	local secs=$1 what=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || die "$what: not after ${secs}s"
		sleep 0.2
	done
}

pick_ports() { # pick_ports N: a base with 2N free ports below 32768
	local n=$1 base i ok
	if [ -n "${VAULT_CLUSTER_PORT:-}" ]; then
		echo "$VAULT_CLUSTER_PORT"
		return
	fi
	for _ in $(seq 50); do
		base=$((20000 + (RANDOM % 1200) * 10))
		ok=1
		for ((i = 0; i < 2 * n; i++)); do
			port_free $((base + i)) || { ok=0; break; }
		done
		[ $ok = 1 ] && { echo "$base"; return; }
	done
	die "no run of $((2 * n)) free ports below 32768"
}

write_config() { # write_config DIR I API CLUSTER
	local dir=$1 i=$2 api=$3 cluster=$4 n=$1/node$2
	local perf=""
	[ -n "$PERF" ] && perf="  performance_multiplier = $PERF"
	cat >"$n/vault.hcl" <<EOF
storage "raft" {
  path    = "$n/data"
  node_id = "node$i"
$perf
}
listener "tcp" {
  address         = "127.0.0.1:$api"
  cluster_address = "127.0.0.1:$cluster"
  tls_disable     = true
}
api_addr         = "http://127.0.0.1:$api"
cluster_addr     = "https://127.0.0.1:$cluster"
plugin_directory = "$n/plugins"
disable_mlock    = true
ui               = false
log_level        = "$LOG_LEVEL"
EOF
}

start_process() { # start_process DIR I: vault server in its own session
	local dir=$1 i=$2 n=$1/node$2
	if [ -f "$n/pid" ] && kill -0 "$(cat "$n/pid")" 2>/dev/null; then
		die "node $i already runs (pid $(cat "$n/pid"))"
	fi
	# Its own session and process group, so that its plugin processes
	# can be stopped with it, and its own TMPDIR for their sockets.
	HOME=$n/home TMPDIR=$n/tmp setsid vault server -config="$n/vault.hcl" >>"$n/vault.log" 2>&1 </dev/null &
	echo $! >"$n/pid"
	wait_until 30 "node $i listening" listening "$dir" "$i"
}

listening() { [ "$(health "$1" "$2")" != 000 ]; }

signal_node() { # signal_node DIR I SIGNAL: the node's process group
	local n=$1/node$2 pid
	[ -f "$n/pid" ] || return 0
	pid=$(cat "$n/pid")
	kill -0 "$pid" 2>/dev/null || { rm -f "$n/pid"; return 0; }
	kill -"$3" -- -"$pid" 2>/dev/null || true
}

stop_node() { # stop_node DIR I: SIGTERM, then SIGKILL after 15 s
	local n=$1/node$2 pid
	[ -f "$n/pid" ] || return 0
	pid=$(cat "$n/pid")
	signal_node "$1" "$2" TERM
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	signal_node "$1" "$2" KILL
	rm -f "$n/pid"
}

unseal() { # unseal DIR I: the threshold of key shares
	local dir=$1 i=$2 k
	for k in $(seq 0 $((KEY_THRESHOLD - 1))); do
		v "$dir" "$i" operator unseal "$(jq -r ".unseal_keys_b64[$k]" "$dir/init.json")" >/dev/null
	done
	wait_until 60 "node $i unsealed" unsealed "$dir" "$i"
}

unsealed() {
	[ "$(curl -s -m 2 "$(addr "$1" "$2")/v1/sys/seal-status" | jq -r .sealed 2>/dev/null)" = false ]
}

leader() {
	local dir=$1 i
	for i in $(seq "$(nodes "$dir")"); do
		[ "$(health "$dir" "$i")" = 200 ] && { echo "$i"; return 0; }
	done
	return 1
}

voters() {
	local dir=$1 i
	i=$(leader "$dir") || { echo 0; return; }
	v "$dir" "$i" operator raft list-peers -format=json | jq '[.data.config.servers[] | select(.voter)] | length'
}

has_voters() { [ "$(voters "$1")" -ge "$2" ]; }

up() {
	local dir=$1 n=${2:-3} base i api cluster sum
	[ -n "${PLUGIN_BIN:-}" ] && [ -x "$PLUGIN_BIN" ] || die "PLUGIN_BIN must name the plugin binary"
	[ ! -e "$dir/ports" ] || die "$dir already holds a cluster"
	mkdir -p "$dir"
	base=$(pick_ports "$n")
	: >"$dir/ports"
	for i in $(seq "$n"); do
		api=$((base + 2 * (i - 1)))
		cluster=$((api + 1))
		echo "$api $cluster" >>"$dir/ports"
		mkdir -p "$dir/node$i"/{data,plugins,tmp,home}
		cp "$PLUGIN_BIN" "$dir/node$i/plugins/$PLUGIN"
		write_config "$dir" "$i" "$api" "$cluster"
	done

	start_process "$dir" 1
	(umask 077 && v "$dir" 1 operator init -key-shares=$KEY_SHARES -key-threshold=$KEY_THRESHOLD \
		-format=json >"$dir/init.json")
	unseal "$dir" 1
	wait_until 60 "node 1 active" is_leader "$dir" 1
	v "$dir" 1 operator raft autopilot set-config -server-stabilization-time=$STABILIZATION >/dev/null
	for i in $(seq 2 "$n"); do
		start_process "$dir" "$i"
		v "$dir" "$i" operator raft join "$(addr "$dir" 1)" >/dev/null
		unseal "$dir" "$i"
	done
	wait_until 120 "$n voters" has_voters "$dir" "$n"

	sum=$(sha256sum "$PLUGIN_BIN" | cut -d' ' -f1)
	v "$dir" 1 plugin register -sha256="$sum" -version="$PLUGIN_VERSION" secret $PLUGIN >/dev/null
	for m in ${MOUNTS:-}; do
		v "$dir" 1 secrets enable -path="$m" -plugin-version="$PLUGIN_VERSION" $PLUGIN >/dev/null
	done
	echo "vault-cluster: $n nodes up in $dir, leader node $(leader "$dir")"
	for i in $(seq "$n"); do echo "  node$i $(addr "$dir" "$i") pid $(cat "$dir/node$i/pid")"; done
}

is_leader() { [ "$(health "$1" "$2")" = 200 ]; }

down() {
	local dir=$1 i
	[ -f "$dir/ports" ] || return 0
	for i in $(seq "$(nodes "$dir")"); do stop_node "$dir" "$i"; done
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 up|down|start|launch|stop|kill|unseal|leader|voters DIR [N|I]"
case $cmd in
up) up "$dir" "${3:-3}" ;;
down) down "$dir" ;;
start)
	start_process "$dir" "$3"
	unseal "$dir" "$3"
	;;
launch) start_process "$dir" "$3" ;;
stop) stop_node "$dir" "$3" ;;
kill)
	signal_node "$dir" "$3" KILL
	rm -f "$dir/node$3/pid"
	;;
unseal) unseal "$dir" "$3" ;;
leader) leader "$dir" ;;
voters) voters "$dir" ;;
*) die "unknown command $cmd" ;;
esac
