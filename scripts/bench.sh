#!/usr/bin/env bash
# Runs the benchmarks and writes bench-results.md (BENCH_OUT) with the
# machine they ran on:
#   1. Go benchmarks of the plugin's domain (backend/) and of the relay,
#      BENCH_COUNT runs each (default 6, the fewest for which benchstat
#      gives a confidence interval), summarised by benchstat (medians) when
#      it can be installed, raw otherwise.
#   2. The load run (e2e/bench_test.go): wrk against the real relay, Vault
#      dev server and plugin on loopback; tokens/s, latency, CPU and memory.
#
# Run through `make bench` (which builds bin/ first). Needs scripts/install.sh
# to have run (vault, wrk). Takes about five minutes on two cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
export VPR_TOOLS
PATH=$VPR_TOOLS/bin:$PATH
OUT=${BENCH_OUT:-$ROOT/bench-results.md}
COUNT=${BENCH_COUNT:-6}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da

for tool in vault wrk; do
	command -v "$tool" >/dev/null || { echo "bench: $tool missing; run scripts/install.sh" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vpr-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# benchstat is optional: without it the raw benchmark lines are kept.
benchstat_bin() {
	if ! command -v benchstat >/dev/null; then
		echo "bench: installing benchstat into $VPR_TOOLS/bin" >&2
		(cd "$VPR_TOOLS" && GOBIN=$VPR_TOOLS/bin GOFLAGS= go install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION") >&2 ||
			echo "bench: benchstat could not be installed; keeping the raw lines" >&2
	fi
	command -v benchstat || true
}

cd "$ROOT"
# Other work on the machine skews every figure; the report says how busy it was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== Go benchmarks: backend, relay (count $COUNT)"
go test -run '^$' -bench . -benchmem -count "$COUNT" ./backend/ ./relay/ | tee "$WORK/go-bench.txt"
bs=$(benchstat_bin)
if [ -n "$bs" ]; then
	# Run where the file is, so the column is labelled "median", not by a path.
	(cd "$WORK" && "$bs" median=go-bench.txt) >"$WORK/go-bench-summary.txt"
	summary="benchstat: medians of $COUNT runs, 95% confidence intervals"
else
	grep -E '^(goos|goarch|pkg|cpu|Benchmark)' "$WORK/go-bench.txt" >"$WORK/go-bench-summary.txt"
	summary="$COUNT runs each, raw"
fi
cat "$WORK/go-bench-summary.txt"

echo "== Load run: wrk → relay → Vault → plugin"
BENCH_REPORT=$WORK/load.md go test -tags 'e2e bench' -run '^TestBench_load$' -count=1 -v -timeout 20m ./e2e/

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
	echo "# Benchmark results"
	echo
	echo "Machine: $(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)."
	echo "$(go version | cut -d' ' -f3), $(vault version | cut -d',' -f1), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)."
	echo "Run $(date -u +%Y-%m-%d) with \`make bench\` (after \`scripts/install.sh\`); load average before: $load_before."
	echo
	echo "## Go benchmarks ($summary)"
	echo
	echo '```text'
	cat "$WORK/go-bench-summary.txt"
	echo '```'
	echo
	echo "## End to end"
	echo
	cat "$WORK/load.md"
} >"$OUT"
echo "== Wrote ${OUT#"$ROOT"/}"
