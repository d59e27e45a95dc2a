#!/usr/bin/env bash
# The soak of `make soak` (not part of `make test`): e2e/soak_test.go (build
# tags e2e and soak) on a single-node Raft Vault, the relay and the plugin,
# with token traffic at half the measured warm throughput and churn (users
# created, changed and deleted; a key rotation every SOAK_ROTATE; refresh
# tokens issued and used), sampling the relay's and the plugin's memory and
# goroutines. Prints every sample (MEASURE soak ...) and fails on a failed
# request or on memory or goroutines that grow.
#
#   SOAK_DURATION  how long the traffic runs (default 30m)
#   SOAK_RATE      token requests a second (default: half the warm
#                  throughput, measured for 10 s first)
#   SOAK_ROTATE    key rotation interval (default 3m)
#   SOAK_SAMPLE    sampling interval (default 30s)
#   SOAK_TIMEOUT   go test -timeout (default 60m)
#   VPR_BIN_DIR    the binaries to run (make soak: bin/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
export VPR_TOOLS PATH=$VPR_TOOLS/bin:$PATH
command -v vault >/dev/null || { echo "soak: vault missing; run scripts/install.sh" >&2; exit 1; }
duration=${SOAK_DURATION:-30m}
export SOAK_DURATION=$duration
echo "soak: $duration, machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# go test's own bound: the run, set-up and a margin (SOAK_TIMEOUT).
exec go test -tags 'e2e soak' -count=1 -v -timeout "${SOAK_TIMEOUT:-60m}" -run '^TestSoak_churn$' ./e2e/
