#!/usr/bin/env bash
# The price of the Prometheus metrics, in instructions per request: the same release tollgate,
# once with `[metrics] enabled = true` (the default) and once with `enabled = false`, each under
# `valgrind --tool=callgrind`, serving the same sequence of requests from the mock upstream.
# Instruction counts do not move with the machine's load (wall-clock ratios on these shared
# 2-core machines swing by ±20% from run to run, far more than the 2% being measured), so one
# run settles it.
#
#   bench/metrics_cost.sh
#
# Environment (all optional):
#   METRICS_COST_REQUESTS  requests measured per mode (JSON, then SSE)            [1000]
#   METRICS_COST_SCRAPES   GET /metrics scrapes during each measured mode          [4]
#   BENCH_SKIP_BUILD       1 = use the binaries already in target/release         [0]
#   BENCH_KEEP             1 = keep the temp dir (configs, logs, callgrind files) [0]
#
# Counts are of the whole tollgate process (every thread: handlers, batch writer, SQLite,
# journal), zeroed after a warm-up and dumped after each mode, so start-up is not counted. The
# mock upstream runs natively (not measured). The scrapes stand for Prometheus scraping every
# 15 s at ~60 req/s; at higher rates a scrape costs proportionally less per request.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${METRICS_COST_REQUESTS:-1000}
SCRAPES=${METRICS_COST_SCRAPES:-4}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
log() { printf '[metrics-cost] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
command -v python3 >/dev/null || die "python3 is missing"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
	log "building release binaries"
	(cd "$ROOT" && cargo build --release -p tollgate -p mock-upstream >&2)
fi
TOLLGATE="$TARGET_DIR/release/tollgate"
MOCK="$TARGET_DIR/release/mock-upstream"
[[ -x $TOLLGATE && -x $MOCK ]] || die "binaries missing in $TARGET_DIR/release"

WORK=$(mktemp -d /tmp/tollgate-metrics-cost.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[[ ${BENCH_KEEP:-0} == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # file regex pid what
	local i
	for i in $(seq 1 1200); do
		if grep -Eo "$2" "$1" 2>/dev/null | head -1; then return 0; fi
		kill -0 "$3" 2>/dev/null || die "$4 exited: $(tail -5 "$1")"
		sleep 0.1
	done
	die "$4 did not start: $(tail -5 "$1")"
}

"$MOCK" --port 0 --no-ledger --output-tokens 16 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
MOCK_URL=$(wait_for "$WORK/mock.log" 'http://127\.0\.0\.1:[0-9]+' "$!" mock-upstream)

# Drives the requests: one keep-alive connection, sequential, so both runs see the same work.
cat >"$WORK/drive.py" <<'EOF'
import http.client, json, sys
port, key, mode, n, scrapes = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
body = json.dumps({"model": "gpt-4o-mini", "stream": mode == "sse",
                   "messages": [{"role": "user", "content": "hello there, how are you today"}]})
every = n // scrapes if scrapes else 0
for i in range(n):
    c.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: {r.status}")
    if every and (i + 1) % every == 0:
        c.request("GET", "/metrics")
        m = c.getresponse()
        m.read()
        if m.status != 200 and m.status != 404:
            sys.exit(f"/metrics: {m.status}")
EOF

json_field() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }
total_ir() { # callgrind file -> instructions
	awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

declare -A IR
for metrics in true false; do
	dir="$WORK/metrics-$metrics"
	mkdir -p "$dir/data"
	cat >"$dir/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:0"
data_dir = "$dir/data"

[providers.mock]
kind = "openai"
base_url = "$MOCK_URL/v1"
api_key = "sk-upstream"
models = ["gpt-*"]

[metrics]
enabled = $metrics
EOF
	log "metrics enabled = $metrics: starting tollgate under callgrind"
	TOLLGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
		"$TOLLGATE" serve --config "$dir/tollgate.toml" >"$dir/tollgate.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	addr=$(wait_for "$dir/tollgate.log" 'tollgate listening on http://[0-9.]+:[0-9]+' "$pid" tollgate)
	port=${addr##*:}
	admin=$(wait_for "$dir/tollgate.log" 'tg-[A-Za-z0-9]{43}' "$pid" tollgate)
	base="http://127.0.0.1:$port"
	account=$(curl -sf "$base/admin/accounts" -H "Authorization: Bearer $admin" \
		-H 'Content-Type: application/json' -d '{"name":"bench"}' | json_field id)
	key=$(curl -sf "$base/admin/accounts/$account/keys" -H "Authorization: Bearer $admin" \
		-H 'Content-Type: application/json' -d '{}' | json_field key)
	curl -sf -o /dev/null "$base/admin/accounts/$account/credits" -H "Authorization: Bearer $admin" \
		-H 'Content-Type: application/json' -d '{"amount_usd":"1000000"}'
	log "warm-up"
	python3 "$WORK/drive.py" "$port" "$key" json 100 0
	python3 "$WORK/drive.py" "$port" "$key" sse 100 0
	callgrind_control --zero "$pid" >/dev/null
	for mode in json sse; do
		log "$mode: $N requests"
		python3 "$WORK/drive.py" "$port" "$key" "$mode" "$N" "$SCRAPES"
		callgrind_control --dump="$mode" "$pid" >/dev/null
		# The dump is written when the process next runs; give it the moment.
		sleep 2
	done
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	# Dumps are numbered in the order they were asked for: .1 after JSON, .2 after SSE (the
	# final dump at exit, of the shutdown, is not used).
	n=1
	for mode in json sse; do
		f="$dir/cg.out.$n"
		[[ -s $f ]] || die "no callgrind dump $f for $mode: $(ls "$dir")"
		IR[$metrics/$mode]=$(total_ir "$f")
		[[ -n ${IR[$metrics/$mode]} ]] || die "no instruction total in $f"
		n=$((n + 1))
	done
done

echo
echo "Prometheus metrics, instructions per request (callgrind; $N requests per mode, $SCRAPES scrapes of /metrics)"
echo
echo "| mode | metrics on | metrics off | cost of metrics |"
echo "|---|---:|---:|---:|"
for mode in json sse; do
	on=${IR[true/$mode]}
	off=${IR[false/$mode]}
	awk -v on="$on" -v off="$off" -v n="$N" -v m="$mode" 'BEGIN {
		printf "| %s | %.0f | %.0f | %+.2f%% |\n", m, on / n, off / n, 100 * (on - off) / off }'
done
echo
for mode in json sse; do
	awk -v on="${IR[true/$mode]}" -v off="${IR[false/$mode]}" -v m="$mode" 'BEGIN {
		d = 100 * (on - off) / off
		printf "%s metrics cost %s under 2%% (%.2f%%)\n", (d < 2 ? "PASS" : "FAIL"), m, d }'
done
