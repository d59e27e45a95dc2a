# Shared by demo.sh and demo-ha.sh (sourced, not run). The caller sets
# DEMO (its name for messages), ROOT, WORK, SERVICE, RELAY_PORT and
# REGISTRY_PORT, and may define demo_stop_extra (run while stopping).
# PIDS collects what was started; stop() ends it, newest first, by PID.

PIDS=()

random() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

stop() {
	trap - INT TERM EXIT
	echo "$DEMO: stopping"
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill "${PIDS[i]}" 2>/dev/null || true
	done
	for i in "${PIDS[@]}"; do
		wait "$i" 2>/dev/null || true
	done
	if declare -F demo_stop_extra >/dev/null; then demo_stop_extra || true; fi
	rm -rf "$WORK"
	echo "$DEMO: stopped"
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
	echo "$DEMO: $name did not answer $want at $url (last: $code); log:" >&2
	tail -n 30 "$WORK/$name.log" >&2
	exit 1
}

# start_relay VAULT_LINES TIMEOUT: the relay with a periodic token under
# deploy/policies/relay.hcl (mint tokens for SERVICE, renew and look up
# itself), so its log starts clean; VAULT_LINES say where Vault is
# (storage.vault lines, indented 4).
start_relay() {
	local vault_lines=$1 timeout=$2 relay_token
	sed "s|\"registry/|\"$SERVICE/|" "$ROOT/deploy/policies/relay.hcl" | vault policy write registry-relay - >/dev/null
	relay_token=$(vault token create -policy=registry-relay -no-default-policy -orphan -period=24h -field=token)
	install -m 600 /dev/null "$WORK/godoauth.yaml" # it holds the relay's token
	cat >"$WORK/godoauth.yaml" <<CONFIG
---
version: 0.1
log:
  level: info
storage:
  vault:
$vault_lines
    auth_token: $relay_token
http:
  addr: 127.0.0.1:$RELAY_PORT
  timeout: $timeout
token:
  issuer: Token
  expiration: 300
CONFIG
	# Without VAULT_TOKEN and VAULT_ADDR, which would override the file:
	# the relay runs with its own token, never the root token.
	env -u VAULT_TOKEN -u VAULT_ADDR "$ROOT/bin/godoauth-relay" -config "$WORK/godoauth.yaml" >"$WORK/relay.log" 2>&1 &
	PIDS+=($!)
	wait_http relay "http://127.0.0.1:$RELAY_PORT/healthz" 200
}

# start_registry: registry 2.8 with token auth against the relay,
# trusting $WORK/bundle.pem.
start_registry() {
	cat >"$WORK/registry.yml" <<CONFIG
version: 0.1
log:
  level: warn
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
CONFIG
	docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
	PIDS+=($!)
	wait_http registry "http://127.0.0.1:$REGISTRY_PORT/v2/" 401
}
