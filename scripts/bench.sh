#!/usr/bin/env bash
# Runs the benchmarks and writes docs/bench-results.md (BENCH_OUT) with the
# machine they ran on, and a picture beside it (docs/bench-results.png):
#   1. Go benchmarks of the plugin's domain (backend/) and of the relay,
#      BENCH_COUNT runs each (default 6, the fewest for which benchstat
#      gives a confidence interval), summarised by benchstat (medians) when
#      it can be installed, raw otherwise.
#   2. The load run (e2e/bench_test.go): wrk against the real relay, Vault
#      dev server and plugin on loopback at 1, 8 and 64 connections: the
#      floor (GET ca/pem), warm tokens, warm tokens with a batch token for
#      the relay, tokens with the credential cache off, and docker_auth
#      when DOCKER_AUTH_BIN names its auth_server (docs/DEVELOPING.md: how to build it);
#      CPU profiles of the three processes under load (kept in
#      BENCH_PROFILE_DIR, default bin/bench-profiles); 10 vs 10,000 users.
#      Robot accounts (e2e/bench_robots_test.go): creds/ issue rate at 8
#      callers, then a warm robot's token against a warm user's with
#      10,000 robots live.
#      Vault identities (e2e/bench_identity_test.go): a Vault token as the
#      password and a password-mount password beside a plugin user and the
#      floor at 64 connections; the password-mount path across several
#      short token_reuse periods (p99 per period, longest gap).
#      Scale (e2e/bench_scale_test.go, issues 27 and 23), on a single-node
#      Raft Vault: 100,000 users against 10 (warm and cold tokens, list,
#      storage size), `godoauth-relay migrate` of 100,000 users, 100
#      mounts behind one relay against one, 10,000 robots expiring at
#      once. BENCH_SCALE_RUN (a go test -run pattern) picks some of them;
#      alone: go test -tags 'e2e bench' -run '^TestBench_scaleUsers$' ./e2e/
#   3. gnuplot draws tokens/s and p99 against connections.
#
# Run through `make bench` (which builds bin/ first). Needs scripts/install.sh
# to have run (vault, wrk, gnuplot). Takes about half an hour on two cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VPR_TOOLS=${VPR_TOOLS:-$HOME/.cache/vpr-tools}
export VPR_TOOLS
PATH=$VPR_TOOLS/bin:$PATH
OUT=${BENCH_OUT:-$ROOT/docs/bench-results.md}
PNG=${OUT%.md}.png
COUNT=${BENCH_COUNT:-6}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da
export BENCH_PROFILE_DIR=${BENCH_PROFILE_DIR:-$ROOT/bin/bench-profiles}

for tool in vault wrk gnuplot; do
	command -v "$tool" >/dev/null || { echo "bench: $tool missing; run scripts/install.sh" >&2; exit 1; }
done
if [ -n "${DOCKER_AUTH_BIN:-}" ]; then
	[ -x "$DOCKER_AUTH_BIN" ] || { echo "bench: DOCKER_AUTH_BIN=$DOCKER_AUTH_BIN is not an executable" >&2; exit 1; }
	DOCKER_AUTH_BIN=$(cd "$(dirname "$DOCKER_AUTH_BIN")" && pwd)/$(basename "$DOCKER_AUTH_BIN")
	export DOCKER_AUTH_BIN
else
	echo "bench: docker_auth skipped (set DOCKER_AUTH_BIN to its auth_server to compare; docs/DEVELOPING.md, Performance)"
fi

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
started=$(date +%s)

echo "== Go benchmarks: backend, relay (count $COUNT)"
go test -run '^$' -bench . -benchmem -count "$COUNT" ./access/ ./backend/ ./relay/ | tee "$WORK/go-bench.txt"
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
BENCH_REPORT=$WORK/load.md BENCH_PLOT_DATA=$WORK/plot.tsv \
	go test -tags 'e2e bench' -run '^TestBench_load$' -count=1 -v -timeout 20m ./e2e/

echo "== Robot accounts: creds/ issue rate, warm robot vs warm user token"
BENCH_REPORT=$WORK/robots.md \
	go test -tags 'e2e bench' -run '^TestBench_robots$' -count=1 -v -timeout 20m ./e2e/

echo "== Vault identities: a Vault token and a password-mount password beside a plugin user; token_reuse expiry"
BENCH_REPORT=$WORK/identity.md \
	go test -tags 'e2e bench' -run '^TestBench_identity$' -count=1 -v -timeout 20m ./e2e/

echo "== Scale: 100,000 users, migrate, 100 mounts, 10,000 robots expiring at once"
BENCH_REPORT=$WORK/scale.md \
	go test -tags 'e2e bench' -run "${BENCH_SCALE_RUN:-^TestBench_(scale|robotExpiry)}" -count=1 -v -timeout 40m ./e2e/

echo "== Picture: ${PNG#"$ROOT"/}"
gnuplot <<EOF
set terminal pngcairo size 1200,520 font "sans,11" noenhanced
set output "$PNG"
stats "$WORK/plot.tsv" using 1 nooutput
set multiplot layout 1,2 title "wrk on loopback, $(nproc) cores, load average before: $load_before"
set logscale xy
set xtics (1, 8, 64)
set xrange [0.8:80]
set xlabel "connections"
set grid
set key below font ",10"
set title "tokens/s (higher is better)"
set ylabel "tokens/s"
set format y "%g"
plot for [i=0:STATS_blocks-1] "$WORK/plot.tsv" index i using 1:2 with linespoints lw 2 pt 7 title columnheader(1)
set title "p99 latency (lower is better)"
set ylabel "p99, ms"
plot for [i=0:STATS_blocks-1] "$WORK/plot.tsv" index i using 1:3 with linespoints lw 2 pt 7 title columnheader(1)
unset multiplot
EOF

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
	echo "# Benchmark results"
	echo
	echo "Machine: $(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r)."
	echo "$(go version | cut -d' ' -f3), $(vault version | cut -d',' -f1), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)."
	echo "Run $(date -u +%Y-%m-%d) with \`make bench\` (after \`scripts/install.sh\`) in $(( ($(date +%s) - started) / 60 )) minutes; load average before: $load_before."
	if awk -v l="${load_before%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
		echo
		echo "**A busy machine:** the load average was above the number of cores, so other work shared the CPU"
		echo "and every rate below is lower, every latency higher, than on a quiet machine. Compare ratios within this run."
	fi
	echo
	echo "![tokens/s and p99 against connections](${PNG##*/})"
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
	cat "$WORK/robots.md"
	cat "$WORK/identity.md"
	cat "$WORK/scale.md"
} >"$OUT"
echo "== Wrote ${OUT#"$ROOT"/} and ${PNG#"$ROOT"/}"
