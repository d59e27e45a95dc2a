#!/usr/bin/env bash
# Runs the end-to-end tests (./e2e, build tag e2e) in E2E_JOBS parallel
# `go test` processes, so that a suite waiting on Vault, a daemon or an
# election does not hold up the others. Tests of one family (the part of the
# name before the first "_", e.g. TestRotation) stay in one process, since
# they may share a server started once per process; families are spread
# over the processes by their weight (E2E_WEIGHTS, or 1 a test).
#
# Tests that compare timings (E2E_ALONE, a name pattern: the user-enumeration
# timing tests) run afterwards in one process of their own, with nothing
# else on the machine, since a neighbour's burst skews their medians.
#
# Each process writes its own log; the logs are printed one after another
# when all have ended, so the output reads as a sequential run. Exits non-zero
# when any process failed. Extra arguments go to every `go test`.
#
#   E2E_JOBS=3 E2E_RUN='TestRotation' scripts/e2e.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=${E2E_JOBS:-3}
TIMEOUT=${E2E_TIMEOUT:-45m}
FILTER=${E2E_RUN:-.}
ALONE=${E2E_ALONE:-'^(TestHardening_noUserEnumerationByTime|TestRaft_noUserEnumerationByTime)$'}
# Families known to be heavy (measured minutes, roughly); others weigh
# one unit per test.
WEIGHTS=${E2E_WEIGHTS:-"TestCluster=12 TestHA=12 TestDocker=3 TestIdentity=6 TestRotation=6 TestHardening=6 TestClients=4 TestDeploy=6 TestRelayToken=5 TestRecipe=2 TestContainers=5 TestCredHelper=6 TestFaults=3"}

tests=$(go test -tags e2e -list "$FILTER" ./e2e/ | grep '^Test' || true)
if [ -z "$tests" ]; then
	echo "e2e: no test matches $FILTER" >&2
	exit 1
fi
alone=$(grep -E "$ALONE" <<<"$tests" || true)
tests=$(grep -vE "$ALONE" <<<"$tests" || true)

# Greedy: the heaviest family goes to the least loaded process.
plan=$(awk -v jobs="$JOBS" -v weights="$WEIGHTS" '
	BEGIN { n = split(weights, w, " "); for (i = 1; i <= n; i++) { split(w[i], kv, "="); wt[kv[1]] = kv[2] } }
	{ fam = $1; sub(/_.*/, "", fam); if (!(fam in members)) order[++nf] = fam
	  members[fam] = members[fam] "|" $1; count[fam]++ }
	END {
		for (i = 1; i <= nf; i++) { f = order[i]; weight[f] = (f in wt) ? wt[f] : count[f] }
		for (k = 1; k <= nf; k++) {               # selection by weight, heaviest first
			best = ""; for (i = 1; i <= nf; i++) if (!(order[i] in done) && (best == "" || weight[order[i]] > weight[best])) best = order[i]
			done[best] = 1
			j = 1; for (s = 2; s <= jobs; s++) if (load[s] < load[j]) j = s
			load[j] += weight[best]; shard[j] = shard[j] members[best]
		}
		for (j = 1; j <= jobs; j++) if (shard[j] != "") print substr(shard[j], 2)
	}' <<<"$tests")

logs=$(mktemp -d "${TMPDIR:-/tmp}/vpr-e2e.XXXXXX")
trap 'rm -rf "$logs"' EXIT
pids=()
i=0
while read -r names; do
	[ -n "$names" ] || continue
	i=$((i + 1))
	echo "e2e: process $i runs ${names//|/ }"
	go test -tags e2e -count=1 -v -timeout "$TIMEOUT" -run "^($names)\$" "$@" ./e2e/ >"$logs/$i.log" 2>&1 &
	pids+=($!)
done <<<"$plan"

rc=0
failed=()
for j in "${!pids[@]}"; do
	if ! wait "${pids[$j]}"; then
		rc=1
		failed+=($((j + 1)))
	fi
done
if [ -n "$alone" ]; then
	i=$((i + 1))
	names=$(paste -sd'|' <<<"$alone")
	echo "e2e: process $i runs ${names//|/ } (alone)"
	if ! go test -tags e2e -count=1 -v -timeout "$TIMEOUT" -run "^($names)\$" "$@" ./e2e/ >"$logs/$i.log" 2>&1; then
		rc=1
		failed+=("$i")
	fi
fi
for j in $(seq 1 "$i"); do
	echo "=== e2e process $j"
	cat "$logs/$j.log"
done
if [ "$rc" != 0 ]; then
	echo "e2e: process(es) ${failed[*]} failed"
fi
exit "$rc"
