#!/usr/bin/env bash
# Gateway benchmark: the mock upstream served directly, through a bare nginx reverse proxy, and
# through tollgate, driven by wrk on 127.0.0.1 only, in bounded runs.
#
#   bench/run.sh
#
# Environment (all optional):
#   BENCH_DURATION       seconds (or a wrk duration like 30s) per measured run      [10]
#   BENCH_WARMUP         seconds of unmeasured warm-up per target and mode           [2]
#   BENCH_OUTPUT_TOKENS  mock --output-tokens (SSE events per stream)               [16]
#   BENCH_PIN            1 = wrk on CPU 0, mock + nginx/tollgate on CPU 1 (taskset)  [0]
#   BENCH_SKIP_BUILD     1 = use the binaries already in target/release              [0]
#   BENCH_KEEP           1 = keep the temp dir (configs, logs, raw wrk output)       [0]
#   BENCH_OUT            also write the Markdown report to this file                 [unset]
#   BENCH_IDLE_WAIT      seconds to wait for other work on the machine to calm down  [120]
#   BENCH_IDLE_MAX       ... until it is at most this % busy                         [15]
#   BENCH_STORES         tollgate stores to measure, space-separated: sqlite postgres [sqlite]
#   BENCH_METRICS_OFF    1 = also measure "tollgate-nometrics" (SQLite, [metrics] enabled =
#                        false) to price the Prometheus metrics                      [0]
#   BENCH_STREAMS        slow-streams scenario: concurrent streams (0 = skip)          [4000]
#   BENCH_STREAM_TOKENS  ... mock --output-tokens of each slow stream (events = this + 4)  [26]
#   BENCH_STREAM_DELAY_MS ... mock --chunk-delay-ms between its events                    [200]
#   BENCH_LEDGER_RECORDS recording scenario: records driven through the ledger alone
#                        (0 = skip)                                               [300000]
#   BENCH_PG             PostgreSQL server for the postgres store, as a URL without a database
#                        name, for a role that may CREATE DATABASE
#                                                     [postgres://postgres@127.0.0.1:5432]
#
# Each store is its own target: "tollgate" (SQLite, in the temp dir) and "tollgate-pg" (a fresh
# database tg_bench_<random> created on BENCH_PG for this run and dropped on exit). Both are
# reported against the nginx measured in the same run. tollgate-pg's CPU per request counts the
# tollgate process plus the PostgreSQL backends connected to its database (not the server's
# shared WAL writer or checkpointer); machine busy covers everything.
#
# After the wrk runs come two scenarios of their own: the slow-streams scenario (a fresh tollgate
# in front of a second mock that paces its events BENCH_STREAM_DELAY_MS apart; the
# `stream_load` example opens BENCH_STREAMS streams at once and holds them to their end, while
# tollgate's VmRSS is sampled from /proc; every stream must complete and have its record), and
# the recording scenario (the `ledger_bench` example: journal + batch writer into a fresh SQLite,
# no HTTP). The report ends with a PASS or FAIL line per goal of issue 12.
#
# It installs wrk, nginx and sqlite3 (and psql for postgres) with apt-get when they are missing,
# builds the workspace in release mode, starts everything in a fresh temp dir, and stops
# everything it started on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
LUA="$BENCH_DIR/post.lua"

DURATION=${BENCH_DURATION:-10}
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION="${DURATION}s"
WARMUP=${BENCH_WARMUP:-2}
[[ $WARMUP =~ ^[0-9]+$ ]] && WARMUP="${WARMUP}s"
OUTPUT_TOKENS=${BENCH_OUTPUT_TOKENS:-16}
PIN=${BENCH_PIN:-0}
KEEP=${BENCH_KEEP:-0}
STORES=${BENCH_STORES:-sqlite}
STREAMS=${BENCH_STREAMS:-4000}
STREAM_TOKENS=${BENCH_STREAM_TOKENS:-26}
STREAM_DELAY_MS=${BENCH_STREAM_DELAY_MS:-200}
LEDGER_RECORDS=${BENCH_LEDGER_RECORDS:-300000}
PG_SERVER=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
PG_SERVER=${PG_SERVER%/}

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
for st in $STORES; do
	[[ $st == sqlite || $st == postgres ]] || die "BENCH_STORES: unknown store $st (sqlite, postgres)"
done

# ---------------------------------------------------------------- tools
install_missing() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
	command -v sqlite3 >/dev/null || missing+=(sqlite3)
	command -v curl >/dev/null || missing+=(curl)
	if [[ " $STORES " == *" postgres "* ]] && ! command -v psql >/dev/null; then
		missing+=(postgresql-client)
	fi
	if [[ $PIN == 1 ]] && ! command -v taskset >/dev/null; then missing+=(util-linux); fi
	((${#missing[@]} == 0)) && return 0
	log "installing: ${missing[*]}"
	local sudo=()
	if [[ $EUID -ne 0 ]]; then
		command -v sudo >/dev/null || die "need root or sudo to apt-get install ${missing[*]}"
		sudo=(sudo)
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}
install_missing
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- build
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
	log "cargo build --release --workspace (waits if another build holds the lock)"
	(cd "$ROOT" && cargo build --release --workspace --quiet)
	(cd "$ROOT" && cargo build --release -p tollgate --example stream_load --example ledger_bench --example fingerprint_bench --quiet)
fi
TOLLGATE="$TARGET_DIR/release/tollgate"
MOCK="$TARGET_DIR/release/mock-upstream"
STREAM_LOAD="$TARGET_DIR/release/examples/stream_load"
LEDGER_BENCH="$TARGET_DIR/release/examples/ledger_bench"
FINGERPRINT_BENCH="$TARGET_DIR/release/examples/fingerprint_bench"
[[ -x $TOLLGATE && -x $MOCK ]] || die "binaries missing in $TARGET_DIR/release"
if ((STREAMS > 0)); then
	[[ -x $STREAM_LOAD ]] || die "$STREAM_LOAD missing (cargo build --release -p tollgate --example stream_load)"
	# Each stream holds a client connection and an upstream one: tollgate needs two descriptors
	# per stream, the mock and the client one each.
	want=$((2 * STREAMS + 1024))
	if (($(ulimit -n) < want)); then
		ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	fi
	(($(ulimit -n) >= want)) || die "ulimit -n is $(ulimit -n); the slow-streams scenario needs $want"
fi
((LEDGER_RECORDS == 0)) || [[ -x $LEDGER_BENCH ]] ||
	die "$LEDGER_BENCH missing (cargo build --release -p tollgate --example ledger_bench)"

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
mkdir -p "$WORK/wrk" "$WORK/nginx/tmp"
PIDS=()
PG_DB="" # the database created for tollgate-pg, dropped on exit
pg() { # database psql-args... -> unaligned, tuples only, stops on the first error
	local db=$1
	shift
	psql "$PG_SERVER/$db" -X -q -At -v ON_ERROR_STOP=1 "$@"
}

stop_pid() { # pid [seconds]: SIGTERM, wait, then SIGKILL
	local pid=$1 secs=${2:-10} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid did not stop in ${secs}s; SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
	if [[ -n $PG_DB ]]; then
		pg postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" ||
			log "could not drop database $PG_DB on $PG_SERVER"
	fi
	if [[ $KEEP == 1 || $rc -ne 0 ]]; then
		log "temp dir kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $PIN == 1 ]]; then
	SRV=(taskset -c 1)
	LOAD=(taskset -c 0)
else
	SRV=()
	LOAD=()
fi

wait_for() { # file regex pid what -> prints the first match
	local file=$1 re=$2 pid=$3 what=$4 i m
	for ((i = 0; i < 300; i++)); do
		if m=$(grep -m1 -Eo "$re" "$file" 2>/dev/null); then
			printf '%s\n' "$m"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || {
			cat "$file" >&2
			die "$what exited during startup"
		}
		sleep 0.1
	done
	cat "$file" >&2
	die "$what did not start within 30s"
}

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		ss -Htln "sport = :$p" 2>/dev/null | grep -q . || {
			echo "$p"
			return
		}
	done
}

# The mock upstream.
"${SRV[@]}" "$MOCK" --port 0 --no-ledger --output-tokens "$OUTPUT_TOKENS" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_PORT=$(wait_for "$WORK/mock.log" 'http://127\.0\.0\.1:[0-9]+' "$MOCK_PID" mock-upstream)
MOCK_PORT=${MOCK_PORT##*:}
log "mock-upstream on 127.0.0.1:$MOCK_PORT (pid $MOCK_PID)"

# Bare nginx in front of the same mock. Non-streaming goes through `/` (default buffering);
# streaming through `/sse/`, unbuffered, with the prefix stripped.
NGINX_PORT=$(free_port)
USER_LINE=""
[[ $EUID -eq 0 ]] && USER_LINE="user $(id -un) $(id -gn);"
cat >"$WORK/nginx/nginx.conf" <<EOF
# generated by bench/run.sh
$USER_LINE
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/client_body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    # Keep wrk's connections open for the whole run, as tollgate and the mock do.
    keepalive_requests 10000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /sse/ {
            proxy_pass http://mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
"${SRV[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
	>"$WORK/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for ((i = 0; i < 100; i++)); do
	curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
	kill -0 "$NGINX_PID" 2>/dev/null || {
		cat "$WORK/nginx/error.log" >&2
		die "nginx exited during startup"
	}
	sleep 0.1
done
NGINX_WORKERS=$(pgrep -c -P "$NGINX_PID" || true)
log "nginx on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID, $NGINX_WORKERS workers)"

# tollgate, once per store, each on a fresh data dir (and, for postgres, a fresh database). The
# admin key is printed on first start with either store.
json_field() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }
declare -A TG_PID TG_URL TG_KEY TG_DATA TG_STORE
TG_TARGETS=()
start_tollgate() { # target store [upstream-port] [measured by wrk: 1]
	local t=$1 store=$2 upstream=${3:-$MOCK_PORT} measured=${4:-1} dir="$WORK/$1" addr port admin account key code
	mkdir -p "$dir/data"
	cat >"$dir/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:0"
data_dir = "$dir/data"

[providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:$upstream/v1"
api_key = "sk-upstream"
models = ["gpt-*"]

[webhooks]
# The hanging-receiver scenario's receiver is on 127.0.0.1.
allow_private_targets = true
EOF
	if [[ $t == tollgate-nometrics ]]; then
		printf '\n[metrics]\nenabled = false\n' >>"$dir/tollgate.toml"
	fi
	if [[ $store == postgres ]]; then
		PG_DB="tg_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
		pg postgres -c "CREATE DATABASE $PG_DB" || die "could not create database $PG_DB on $PG_SERVER"
		log "created database $PG_DB on $PG_SERVER (dropped on exit)"
		cat >>"$dir/tollgate.toml" <<EOF

[store]
kind = "postgres"
url = "$PG_SERVER/$PG_DB"
replica_id = "bench"
EOF
	fi
	TOLLGATE_LOG=warn "${SRV[@]}" "$TOLLGATE" serve --config "$dir/tollgate.toml" \
		>"$dir/tollgate.log" 2>&1 &
	TG_PID[$t]=$!
	PIDS+=("${TG_PID[$t]}")
	addr=$(wait_for "$dir/tollgate.log" 'tollgate listening on http://[0-9.]+:[0-9]+' "${TG_PID[$t]}" "$t")
	port=${addr##*:}
	admin=$(wait_for "$dir/tollgate.log" 'tg-[A-Za-z0-9]{43}' "${TG_PID[$t]}" "$t")
	TG_URL[$t]="http://127.0.0.1:$port"
	TG_DATA[$t]="$dir/data"
	TG_STORE[$t]=$store
	log "$t ($store store) on 127.0.0.1:$port (pid ${TG_PID[$t]})"

	account=$(curl -sf "${TG_URL[$t]}/admin/accounts" -H "Authorization: Bearer $admin" \
		-H 'Content-Type: application/json' -d '{"name":"bench"}' | json_field id)
	[[ -n $account ]] || die "$t: could not create an account"
	key=$(curl -sf "${TG_URL[$t]}/admin/accounts/$account/keys" -H "Authorization: Bearer $admin" \
		-H 'Content-Type: application/json' -d '{}' | json_field key)
	[[ -n $key ]] || die "$t: could not create a key"
	TG_KEY[$t]=$key
	# Credits are enforced by default (402 without a balance): grant far more than the runs can
	# use, so the benchmark measures the default configuration, balance check included.
	code=$(curl -s -o "$dir/credits.json" -w '%{http_code}' "${TG_URL[$t]}/admin/accounts/$account/credits" \
		-H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
		-d '{"amount_usd":"1000000","note":"bench"}')
	case $code in
	2*) log "$t: granted the bench account USD 1,000,000 of credits" ;;
	404) log "$t: no credits endpoint in this build; skipping the grant" ;;
	*)
		cat "$dir/credits.json" >&2
		die "$t: credit grant answered $code"
		;;
	esac
	((measured == 1)) && TG_TARGETS+=("$t")
	return 0
}
for st in $STORES; do
	if [[ $st == sqlite ]]; then
		start_tollgate tollgate sqlite
	else
		start_tollgate tollgate-pg postgres
	fi
done
[[ ${BENCH_METRICS_OFF:-0} == 1 ]] && start_tollgate tollgate-nometrics sqlite

# ---------------------------------------------------------------- targets
declare -A URL_JSON URL_SSE KEY
URL_JSON[mock]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
URL_SSE[mock]="${URL_JSON[mock]}"
KEY[mock]="sk-upstream"
URL_JSON[nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
URL_SSE[nginx]="http://127.0.0.1:$NGINX_PORT/sse/v1/chat/completions"
KEY[nginx]="sk-upstream"
# Requests each tollgate was sent, for the ledger check at the end.
declare -A TG_COMPLETED TG_SENT TG_NON2XX
for t in "${TG_TARGETS[@]}"; do
	URL_JSON[$t]="${TG_URL[$t]}/v1/chat/completions"
	URL_SSE[$t]="${TG_URL[$t]}/v1/chat/completions"
	KEY[$t]="${TG_KEY[$t]}"
	TG_COMPLETED[$t]=0 TG_SENT[$t]=0 TG_NON2XX[$t]=0
done
TARGETS=(mock nginx "${TG_TARGETS[@]}")
is_tollgate() { [[ -n ${TG_PID[$1]:-} ]]; }
# PostgreSQL transactions in tollgate-pg's database, from here (after provisioning) until it has
# stopped: how many round trips the requests cost (a transaction is at least one).
pg_xacts() { pg postgres -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$PG_DB'"; }
[[ -n $PG_DB ]] && PG_XACT0=$(pg_xacts)

# Smoke test: each target answers both modes with 200, and SSE ends with [DONE].
for t in "${TARGETS[@]}"; do
	for mode in json sse; do
		if [[ $mode == json ]]; then
			url=${URL_JSON[$t]} body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}'
		else
			url=${URL_SSE[$t]} body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}],"stream":true}'
		fi
		code=$(curl -s -o "$WORK/smoke-$t-$mode.out" -w '%{http_code}' "$url" \
			-H "Authorization: Bearer ${KEY[$t]}" -H 'Content-Type: application/json' -d "$body")
		if is_tollgate "$t"; then
			TG_SENT[$t]=$((TG_SENT[$t] + 1)) TG_COMPLETED[$t]=$((TG_COMPLETED[$t] + 1))
		fi
		[[ $code == 200 ]] || {
			cat "$WORK/smoke-$t-$mode.out" >&2
			die "smoke test: $t $mode answered $code"
		}
		if [[ $mode == sse ]]; then
			grep -q '\[DONE\]' "$WORK/smoke-$t-$mode.out" || die "smoke test: $t stream has no [DONE]"
		fi
	done
done
SSE_EVENTS=$(grep -c '^data:' "$WORK/smoke-${TG_TARGETS[0]}-sse.out" || true)
log "smoke tests passed"

# ---------------------------------------------------------------- wrk
declare -A R # R[scenario|target|field]
fmt_rps_early() { awk -v v="$1" 'BEGIN { printf "%d", v + 0.5 }'; }
get() { echo "${R["$1|$2|$3"]}"; }
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

proc_ticks() { # pids... -> utime+stime summed, in clock ticks
	local t=0 p v
	for p in "$@"; do
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
machine_ticks() { # -> "busy total" from /proc/stat (all CPUs)
	awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, total }' /proc/stat
}
# The processes whose CPU time is charged to each target (nginx: master and workers;
# tollgate-pg: the gateway and the PostgreSQL backends serving its database, looked up at the
# start and at the end of each run, since its pool may open connections during one).
declare -A TARGET_PIDS
TARGET_PIDS[mock]="$MOCK_PID"
TARGET_PIDS[nginx]="$NGINX_PID $(pgrep -P "$NGINX_PID" | paste -sd' ' -)"
for t in "${TG_TARGETS[@]}"; do TARGET_PIDS[$t]="${TG_PID[$t]}"; done
target_pids() { # target -> pids, one line
	local t=$1
	if [[ ${TG_STORE[$t]:-} == postgres ]]; then
		{
			echo "${TG_PID[$t]}"
			pg postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DB'"
		} | paste -sd' ' -
	else
		echo "${TARGET_PIDS[$t]}"
	fi
}

# How busy the machine is before any load: other work on it skews every figure. Wait a while
# (BENCH_IDLE_WAIT seconds) for it to fall under BENCH_IDLE_MAX percent, then go on regardless.
IDLE_WAIT=${BENCH_IDLE_WAIT:-120}
IDLE_MAX=${BENCH_IDLE_MAX:-15}
waited=0
while :; do
	read -r b0 t0 < <(machine_ticks)
	sleep 2
	read -r b1 t1 < <(machine_ticks)
	IDLE_BUSY=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
	((IDLE_BUSY <= IDLE_MAX || waited >= IDLE_WAIT)) && break
	((waited == 0)) && log "machine ${IDLE_BUSY}% busy with other work; waiting up to ${IDLE_WAIT}s for it to calm down"
	waited=$((waited + 2))
done
log "machine busy before the runs: ${IDLE_BUSY}% of $NCPU CPUs"

run_wrk() { # label target mode conns threads duration
	local label=$1 t=$2 mode=$3 conns=$4 threads=$5 dur=$6
	local url stream=0 out="$WORK/wrk/$label-$t.txt" line kv
	if [[ $mode == sse ]]; then url=${URL_SSE[$t]} stream=1; else url=${URL_JSON[$t]}; fi
	local p0 m0 b0 t0 p1 m1 b1 t1 pids0 pids1
	pids0=$(target_pids "$t")
	# shellcheck disable=SC2086
	p0=$(proc_ticks $pids0)
	m0=$(proc_ticks "$MOCK_PID")
	read -r b0 t0 < <(machine_ticks)
	BENCH_KEY=${KEY[$t]} BENCH_STREAM=$stream "${LOAD[@]}" \
		wrk -t"$threads" -c"$conns" -d"$dur" --latency -s "$LUA" "$url" >"$out" 2>&1 ||
		{
			cat "$out" >&2
			die "wrk failed: $label $t"
		}
	# A process that appeared during the run counts from 0: all its time is the run's.
	pids1=$(echo "$pids0 $(target_pids "$t")" | tr ' ' '\n' | grep . | sort -un | paste -sd' ' -)
	# shellcheck disable=SC2086
	p1=$(proc_ticks $pids1)
	m1=$(proc_ticks "$MOCK_PID")
	read -r b1 t1 < <(machine_ticks)
	line=$(grep -m1 '^BENCH ' "$out") || {
		cat "$out" >&2
		die "no BENCH line in wrk output ($label $t)"
	}
	for kv in ${line#BENCH }; do R["$label|$t|${kv%%=*}"]=${kv#*=}; done
	# CPU time per completed request: of the target's own processes, and of the mock behind it.
	R["$label|$t|cpu_us"]=$(awk -v d=$((p1 - p0)) -v n="${R["$label|$t|requests"]}" -v hz="$CLK_TCK" \
		'BEGIN { printf "%.1f", n ? d * 1e6 / hz / n : 0 }')
	R["$label|$t|mock_cpu_us"]=$(awk -v d=$((m1 - m0)) -v n="${R["$label|$t|requests"]}" -v hz="$CLK_TCK" \
		'BEGIN { printf "%.1f", n ? d * 1e6 / hz / n : 0 }')
	R["$label|$t|busy"]=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
	if is_tollgate "$t"; then
		TG_COMPLETED[$t]=$((TG_COMPLETED[$t] + R["$label|$t|requests"]))
		TG_SENT[$t]=$((TG_SENT[$t] + R["$label|$t|sent"]))
		TG_NON2XX[$t]=$((TG_NON2XX[$t] + R["$label|$t|non2xx"]))
	fi
	local errs=$((R["$label|$t|err_connect"] + R["$label|$t|err_read"] + R["$label|$t|err_write"] + R["$label|$t|err_timeout"]))
	log "$(printf '%-8s %-11s %10s req/s  p50 %6s us  p99 %6s us  CPU/req %6s us  busy %3s%%  non2xx %s  socket errors %s' \
		"$label" "$t" "${R["$label|$t|rps"]}" "${R["$label|$t|p50_us"]}" "${R["$label|$t|p99_us"]}" \
		"${R["$label|$t|cpu_us"]}" "${R["$label|$t|busy"]}" "${R["$label|$t|non2xx"]}" "$errs")"
}

log "warm-up: ${WARMUP} per target and mode at 64 connections"
for t in "${TARGETS[@]}"; do
	run_wrk warm-json "$t" json 64 2 "$WARMUP"
	run_wrk warm-sse "$t" sse 64 2 "$WARMUP"
done

SCENARIOS=("json c1" "json c64" "sse c1" "sse c64")
log "measuring: ${#SCENARIOS[@]} scenarios x ${#TARGETS[@]} targets x $DURATION"
for sc in "${SCENARIOS[@]}"; do
	mode=${sc% *}
	conns=${sc#* c}
	threads=1
	((conns > 1)) && threads=2
	for t in "${TARGETS[@]}"; do
		run_wrk "${mode}-c$conns" "$t" "$mode" "$conns" "$threads" "$DURATION"
	done
done

# ---------------------------------------------------------------- hanging webhook receiver
# The first tollgate again at 64 connections, now with a webhook whose receiver accepts
# connections and never answers, and 50 events queued for it: the dispatcher holds
# max_in_flight_per_endpoint attempts open on it for timeout_secs each, and the proxy must not
# notice.
HOOK_TG=${TG_TARGETS[0]}
HANG_PORT_FILE="$WORK/hang.port"
python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(128)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' >"$HANG_PORT_FILE" &
HANG_PID=$!
PIDS+=("$HANG_PID")
for _ in $(seq 1 50); do [[ -s $HANG_PORT_FILE ]] && break; sleep 0.1; done
HANG_PORT=$(head -1 "$HANG_PORT_FILE")
[[ -n $HANG_PORT ]] || die "the hanging receiver did not start"
HOOK_ID=$(curl -sf "${TG_URL[$HOOK_TG]}/v1/webhooks" -H "Authorization: Bearer ${TG_KEY[$HOOK_TG]}" \
	-H 'Content-Type: application/json' \
	-d "{\"url\":\"http://127.0.0.1:$HANG_PORT/hook\",\"events\":[\"credits.low\"]}" | json_field id)
[[ -n $HOOK_ID ]] || die "$HOOK_TG: could not create the webhook"
for _ in $(seq 1 50); do
	curl -sf -o /dev/null -X POST "${TG_URL[$HOOK_TG]}/v1/webhooks/$HOOK_ID/test" \
		-H "Authorization: Bearer ${TG_KEY[$HOOK_TG]}" || die "$HOOK_TG: could not queue a test event"
done
sleep 1
HANG_CONNS=$(ss -Htn state established "( sport = :$HANG_PORT )" 2>/dev/null | wc -l)
log "hanging receiver on 127.0.0.1:$HANG_PORT holds $HANG_CONNS connection(s) from $HOOK_TG"
run_wrk json-c64-hang "$HOOK_TG" json 64 2 "$DURATION"

# ---------------------------------------------------------------- slow streams
# A fresh tollgate (its RSS measures this scenario alone) in front of a second mock that paces
# its events STREAM_DELAY_MS apart; stream_load opens STREAMS streams at once and holds each to
# its end. VmRSS is sampled every 100 ms from /proc; VmHWM is the kernel's own peak.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
if ((STREAMS > 0)); then
	"${SRV[@]}" "$MOCK" --port 0 --no-ledger --output-tokens "$STREAM_TOKENS" \
		--chunk-delay-ms "$STREAM_DELAY_MS" >"$WORK/mock-slow.log" 2>&1 &
	SLOW_PID=$!
	PIDS+=("$SLOW_PID")
	SLOW_PORT=$(wait_for "$WORK/mock-slow.log" 'http://127\.0\.0\.1:[0-9]+' "$SLOW_PID" mock-upstream)
	SLOW_PORT=${SLOW_PORT##*:}
	start_tollgate tollgate-streams sqlite "$SLOW_PORT" 0
	ST=tollgate-streams
	ST_PID=${TG_PID[$ST]}
	# One stream first, so the idle figure includes what the first request sets up (pools,
	# caches), as every figure after it does.
	curl -s -o "$WORK/slow-smoke.out" "${TG_URL[$ST]}/v1/chat/completions" -H "Authorization: Bearer ${TG_KEY[$ST]}" \
		-H 'Content-Type: application/json' \
		-d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}],"stream":true}'
	grep -q '\[DONE\]' "$WORK/slow-smoke.out" || die "slow-streams smoke request failed"
	ST_EVENTS=$(grep -c '^data:' "$WORK/slow-smoke.out" || true)
	sleep 1
	ST_RSS0=$(rss_kb "$ST_PID")
	(
		while kill -0 "$ST_PID" 2>/dev/null; do
			rss_kb "$ST_PID"
			sleep 0.1
		done
	) >"$WORK/streams-rss.txt" &
	SAMPLER_PID=$!
	PIDS+=("$SAMPLER_PID")
	ST_T0=$(proc_ticks "$ST_PID")
	log "slow streams: $STREAMS streams of $ST_EVENTS events ${STREAM_DELAY_MS} ms apart through $ST (idle RSS $((ST_RSS0 / 1024)) MB)"
	ST_LINE=$("${LOAD[@]}" "$STREAM_LOAD" --addr "127.0.0.1:${TG_URL[$ST]##*:}" --key "${TG_KEY[$ST]}" \
		--streams "$STREAMS" 2>"$WORK/stream_load.err" | grep '^STREAMS ') || {
		cat "$WORK/stream_load.err" >&2
		die "stream_load failed"
	}
	ST_T1=$(proc_ticks "$ST_PID")
	cat "$WORK/stream_load.err" >&2
	for kv in ${ST_LINE#STREAMS }; do R["streams|$ST|${kv%%=*}"]=${kv#*=}; done
	ST_PEAK=$(sort -n "$WORK/streams-rss.txt" | tail -1)
	ST_HWM=$(hwm_kb "$ST_PID")
	ST_CPU_US=$(awk -v d=$((ST_T1 - ST_T0)) -v n="$STREAMS" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", d * 1e6 / hz / n }')
	kill "$SAMPLER_PID" 2>/dev/null || true
	log "slow streams: $(get streams "$ST" completed)/$STREAMS completed in $(get streams "$ST" secs)s; RSS $((ST_RSS0 / 1024)) MB idle, peak $((ST_PEAK / 1024)) MB sampled (VmHWM $((ST_HWM / 1024)) MB)"
	stop_pid "$ST_PID" 60
	wait "$ST_PID" 2>/dev/null || true
	ST_ROWS=$(sqlite3 "${TG_DATA[$ST]}/tollgate.db" "SELECT COUNT(*) FROM usage_records WHERE streamed = 1 AND status = 'success'")
	# The smoke stream is one of them.
	ST_ROWS=$((ST_ROWS - 1))
	ST_STATUS=$(sqlite3 "${TG_DATA[$ST]}/tollgate.db" "$(printf '%s' "SELECT status || '=' || COUNT(*) FROM usage_records GROUP BY status ORDER BY status;")" | paste -sd' ' -)
fi

# ---------------------------------------------------------------- ledger check
declare -A ROWS ROWS_BY_STATUS TG_RC JOURNAL_LEFT
Q_ROWS='SELECT COUNT(*) FROM usage_records;'
Q_STATUS="SELECT status || '=' || COUNT(*) FROM usage_records GROUP BY status ORDER BY status;"
for t in "${TG_TARGETS[@]}"; do
	log "stopping $t (SIGTERM: graceful, flushes the batch writer)"
	stop_pid "${TG_PID[$t]}" 60
	TG_RC[$t]=0
	wait "${TG_PID[$t]}" 2>/dev/null || TG_RC[$t]=$?
	if [[ ${TG_STORE[$t]} == postgres ]]; then
		sleep 1 # backends' statistics reach pg_stat_database when they exit
		PG_XACTS=$(($(pg_xacts) - PG_XACT0))
		ROWS[$t]=$(pg "$PG_DB" -c "$Q_ROWS")
		ROWS_BY_STATUS[$t]=$(pg "$PG_DB" -c "$Q_STATUS" | paste -sd' ' -)
	else
		ROWS[$t]=$(sqlite3 "${TG_DATA[$t]}/tollgate.db" "$Q_ROWS")
		ROWS_BY_STATUS[$t]=$(sqlite3 "${TG_DATA[$t]}/tollgate.db" "$Q_STATUS" | paste -sd' ' -)
	fi
	JOURNAL_LEFT[$t]=$(cat "${TG_DATA[$t]}"/journal/*.log 2>/dev/null | wc -l)
done

# ---------------------------------------------------------------- recording
# The ledger alone (journal + batch writer into a fresh SQLite, no HTTP), with the gateways
# stopped so that it has the machine.
if ((LEDGER_RECORDS > 0)); then
	log "recording: $LEDGER_RECORDS records through the ledger alone (ledger_bench)"
	LEDGER_LINE=$("$LEDGER_BENCH" --records "$LEDGER_RECORDS" --dir "$WORK/ledger" | tee "$WORK/ledger.txt" | grep '^LEDGER ') ||
		die "ledger_bench failed"
	for kv in ${LEDGER_LINE#LEDGER }; do R["ledger|bench|${kv%%=*}"]=${kv#*=}; done
	log "recording: $(fmt_rps_early "$(get ledger bench records_per_sec)") records/s"
fi

# ---------------------------------------------------------------- fingerprints
# What the insights' request fingerprints cost per request (key derivation + two keyed hashes
# over the parsed body), set against tollgate's CPU per request measured above.
FP_LINE=""
if [[ -x $FINGERPRINT_BENCH ]]; then
	log "fingerprints: timing the hashes alone (fingerprint_bench)"
	FP_LINE=$("$FINGERPRINT_BENCH" | grep '^FINGERPRINT ') || FP_LINE=""
	for kv in ${FP_LINE#FINGERPRINT }; do R["fp|bench|${kv%%=*}"]=${kv#*=}; done
fi

# ---------------------------------------------------------------- report
fmt_us() { # microseconds -> "123 µs" or "1.23 ms"
	awk -v v="$1" 'BEGIN { if (v < 1000) printf "%d µs", v; else printf "%.2f ms", v / 1000 }'
}
fmt_signed_us() {
	awk -v v="$1" 'BEGIN { s = v < 0 ? "−" : "+"; a = v < 0 ? -v : v;
		if (a < 1000) printf "%s%d µs", s, a; else printf "%s%.2f ms", s, a / 1000 }'
}
fmt_rps() { awk -v v="$1" 'BEGIN { printf "%d", v + 0.5 }' | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

REPORT="$WORK/report.md"
{
	CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
	echo "Machine: $(nproc) cores ($CPU), kernel $(uname -r), $(rustc --version 2>/dev/null | cut -d' ' -f1-2), $(date -u '+%Y-%m-%d %H:%M UTC')"
	if REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
		DIRTY=$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
		echo "Source: commit $REV$( ((DIRTY > 0)) && echo " plus $DIRTY uncommitted change(s) under crates/ or Cargo.*")."
	fi
	if [[ $PIN == 1 ]]; then
		echo "Pinning: wrk on CPU 0; mock, nginx and tollgate share CPU 1 (BENCH_PIN=1)."
	else
		echo "No pinning: wrk, the mock, nginx and tollgate all share the same $(nproc) cores, so every"
		echo "figure includes the load generator's and the mock's CPU use; compare the targets with each"
		echo "other, not with figures from a dedicated load-generator machine."
	fi
	echo "Runs: $DURATION each after a ${WARMUP} warm-up; mock --output-tokens $OUTPUT_TOKENS (a stream is"
	echo "$SSE_EVENTS \`data:\` events, counted by wrk as one request); nginx $($NGINX -v 2>&1 | cut -d/ -f2) with $NGINX_WORKERS workers;"
	for t in "${TG_TARGETS[@]}"; do
		if [[ ${TG_STORE[$t]} == postgres ]]; then
			echo "$t: default settings (tokio workers = cores, journal), PostgreSQL $(pg postgres -c 'SHOW server_version' | cut -d' ' -f1) store"
			echo "(a fresh database on the same machine); its CPU per request includes its PostgreSQL backends'."
		else
			echo "$t: default settings (tokio workers = cores, SQLite store, journal)."
		fi
	done
	echo "The machine was ${IDLE_BUSY}% busy before the runs (other work on it adds noise)."
	echo "CPU per request: user+system CPU time of the target's own processes (not the mock's, not wrk's)"
	echo "divided by the requests wrk completed; machine busy: all CPUs during the run."
	echo
	echo "| scenario | target | req/s | p50 | p99 | p50 added vs mock | req/s vs nginx | CPU per request | machine busy |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
	for sc in "${SCENARIOS[@]}"; do
		mode=${sc% *}
		conns=${sc#* c}
		label="${mode}-c$conns"
		name="$([[ $mode == json ]] && echo non-streaming || echo streaming), $conns conn"
		((conns > 1)) && name+="s"
		mock_p50=$(get "$label" mock p50_us)
		for t in "${TARGETS[@]}"; do
			rps=$(get "$label" "$t" rps)
			p50=$(get "$label" "$t" p50_us)
			p99=$(get "$label" "$t" p99_us)
			added="—"
			[[ $t != mock ]] && added=$(fmt_signed_us $((p50 - mock_p50)))
			vs="—"
			is_tollgate "$t" && vs="$(ratio "$rps" "$(get "$label" nginx rps)")×"
			[[ $t == nginx ]] && vs="1.00×"
			echo "| $name | $t | $(fmt_rps "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $added | $vs |" \
				"$(get "$label" "$t" cpu_us) µs | $(get "$label" "$t" busy)% |"
		done
	done
	echo
	pass() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }
	for tg in "${TG_TARGETS[@]}"; do
		echo "Goals of issue 12 ($tg against nginx, same run):"
		echo
		for mode in json sse; do
			tr=$(ratio "$(get "$mode-c64" "$tg" rps)" "$(get "$mode-c64" nginx rps)")
			echo "- $mode, 64 connections: throughput $tr× nginx's (goal ≥ 0.50×, aim 0.80×): $(pass "$tr >= 0.5")"
		done
		for mode in json sse; do
			tc=$(get "$mode-c64" "$tg" cpu_us)
			nc=$(get "$mode-c64" nginx cpu_us)
			cr=$(ratio "$tc" "$nc")
			echo "- $mode, 64 connections: CPU per request $tc µs, nginx $nc µs: $cr× (goal ≤ 2×): $(pass "$cr <= 2")"
		done
		for mode in json sse; do
			m=$(get "$mode-c1" mock p50_us)
			na=$(($(get "$mode-c1" nginx p50_us) - m))
			ta=$(($(get "$mode-c1" "$tg" p50_us) - m))
			echo "- $mode, 1 connection: $tg adds $(fmt_signed_us "$ta") at p50, nginx $(fmt_signed_us "$na");" \
				"difference $(fmt_signed_us $((ta - na))) (goal ≤ +50 µs): $(pass "$ta - $na <= 50")"
		done
		for c in 1 64; do
			d=$(($(get "sse-c$c" "$tg" p99_us) - $(get "sse-c$c" nginx p99_us)))
			echo "- streaming p99, $c connection$( ((c > 1)) && echo s): $tg − nginx = $(fmt_signed_us "$d") (target ≤ 5 ms): $(pass "$d <= 5000")"
		done
		worst=0
		for mode in json sse; do
			v=$(get "$mode-c1" "$tg" p50_us)
			((v > worst)) && worst=$v
		done
		echo "- Nagle-style stall (a ~40 ms p50 at 1 connection): worst $tg p50 at 1 connection is $(fmt_us "$worst"): $(pass "$worst < 20000")"
		echo
	done
	if [[ -n ${TG_PID[tollgate-nometrics]:-} ]]; then
		echo "Prometheus metrics (tollgate against tollgate-nometrics, same run):"
		echo
		for sc in json-c64 sse-c64; do
			on=$(get "$sc" tollgate cpu_us)
			off=$(get "$sc" tollgate-nometrics cpu_us)
			pct=$(awk -v a="$on" -v b="$off" 'BEGIN { if (b > 0) printf "%.1f", 100 * (a - b) / b; else print "n/a" }')
			echo "- $sc: CPU per request $on µs on, $off µs off: ${pct}% (target < 2%): $(pass "$pct < 2")"
		done
		echo
	fi
	hr=$(get json-c64-hang "$HOOK_TG" rps)
	hp=$(get json-c64-hang "$HOOK_TG" p99_us)
	bp=$(get json-c64 "$HOOK_TG" p99_us)
	echo "Hanging webhook receiver ($HOOK_TG, non-streaming, 64 connections; the receiver accepts and"
	echo "never answers, 50 events queued, $HANG_CONNS connection(s) held to it after 1 s):"
	echo
	echo "- $(fmt_rps "$hr") req/s (target ≥ 2,000): $(pass "$hr >= 2000")"
	echo "- p99 $(fmt_us "$hp") against $(fmt_us "$bp") without it (target ≤ 1.5× + 2 ms): $(pass "$hp <= 1.5 * $bp + 2000")"
	echo "- connections held by the dispatcher: $HANG_CONNS (max_in_flight_per_endpoint = 4): $(pass "$HANG_CONNS <= 4 && $HANG_CONNS > 0")"
	echo
	if ((STREAMS > 0)); then
		st_done=$(get streams "$ST" completed)
		per=$(awk -v p="$ST_PEAK" -v b="$ST_RSS0" -v n="$STREAMS" 'BEGIN { printf "%.1f", (p - b) / n }')
		echo "Slow streams ($ST, a fresh process, SQLite; mock --output-tokens $STREAM_TOKENS --chunk-delay-ms $STREAM_DELAY_MS:"
		echo "$ST_EVENTS \`data:\` events per stream; \`stream_load --streams $STREAMS\`, all opened at once, 256 connecting at a time):"
		echo
		echo "- completed $st_done of $STREAMS in $(get streams "$ST" secs) s (stream time p50 $(get streams "$ST" p50_ms) ms, p99 $(get streams "$ST" p99_ms) ms, max $(get streams "$ST" max_ms) ms); $ST CPU $ST_CPU_US µs per stream"
		echo "- RSS (VmRSS every 100 ms): $((ST_RSS0 / 1024)) MB idle → $((ST_PEAK / 1024)) MB peak (VmHWM $((ST_HWM / 1024)) MB): $per KB per stream"
		echo "- records: $ST_ROWS successful streamed rows for the $STREAMS streams ($ST_STATUS, the smoke stream included)"
		echo "- goal: all completed and recorded in ≤ 100 MB RSS: $(pass "$st_done == $STREAMS && $ST_ROWS == $STREAMS && $ST_PEAK <= 100 * 1024")"
		echo
	fi
	if ((LEDGER_RECORDS > 0)); then
		echo "Recording (\`ledger_bench --records $LEDGER_RECORDS\`: 64 tasks call Ledger::record, each record journaled with"
		echo "a write(2), then batched into a fresh SQLite with its rollups; timed until all are committed):"
		echo
		echo "- $(fmt_rps "$(get ledger bench records_per_sec)") records/s ($(get ledger bench records) records in $(get ledger bench secs) s) (goal ≥ 100,000): $(pass "$(get ledger bench records_per_sec) >= 100000")"
		echo
	fi
	if [[ -n $FP_LINE ]]; then
		fp_ns=$(get fp bench bench_ns)
		fp_cpu=$(get json-c64 tollgate cpu_us)
		fp_pct=$(awk -v a="$fp_ns" -v b="$fp_cpu" 'BEGIN { if (b > 0) printf "%.2f", a / 10 / b; else print "n/a" }')
		echo "Request fingerprints (\`fingerprint_bench\`: the per-account key and both keyed hashes, on a parsed body):"
		echo
		echo "- $fp_ns ns per request for the bench body ($(get fp bench bench_bytes) bytes), $(get fp bench 10turns_ns) ns for a 10-turn"
		echo "  conversation with a tool ($(get fp bench 10turns_bytes) bytes), $(get fp bench 50turns_ns) ns for 50 turns ($(get fp bench 50turns_bytes) bytes)"
		echo "- against tollgate's CPU per request (json, 64 connections, $fp_cpu µs): ${fp_pct}% (target < 2%): $(pass "$fp_pct < 2")"
		echo
	fi
	for tg in "${TG_TARGETS[@]}"; do
		where="tollgate.db usage_records"
		[[ ${TG_STORE[$tg]} == postgres ]] && where="PostgreSQL $PG_DB usage_records"
		echo "Ledger check, $tg (every request it was sent, including warm-up and the 2 smoke requests):"
		echo
		echo "- wrk + curl: ${TG_COMPLETED[$tg]} responses received (${TG_NON2XX[$tg]} non-2xx), ${TG_SENT[$tg]} requests sent" \
			"(the $((TG_SENT[$tg] - TG_COMPLETED[$tg])) in flight when a run's time ran out are sent but never counted by wrk)"
		echo "- $where: ${ROWS[$tg]} rows (${ROWS_BY_STATUS[$tg]}); $tg exit code after SIGTERM: ${TG_RC[$tg]}; journal lines left: ${JOURNAL_LEFT[$tg]}"
		if ((ROWS[$tg] == TG_COMPLETED[$tg])); then
			verdict="MATCH: one row per response received"
		elif ((ROWS[$tg] >= TG_COMPLETED[$tg] && ROWS[$tg] <= TG_SENT[$tg])); then
			verdict="MATCH: every response received has a row; the $((ROWS[$tg] - TG_COMPLETED[$tg])) extra rows are requests cut off in flight at the end of a run (sent, recorded, never counted by wrk)"
		else
			verdict="MISMATCH: ${ROWS[$tg]} rows for ${TG_COMPLETED[$tg]} responses received / ${TG_SENT[$tg]} sent"
		fi
		echo "- $verdict"
		echo "- durability (every response received has its row; kill -9 is covered by crates/tollgate/tests/api/durability.rs): $(pass "${ROWS[$tg]} >= ${TG_COMPLETED[$tg]} && ${ROWS[$tg]} <= ${TG_SENT[$tg]}")"
		if [[ ${TG_STORE[$tg]} == postgres ]]; then
			echo "- PostgreSQL transactions in $PG_DB meanwhile (pg_stat_database): $PG_XACTS," \
				"$(awk -v x="$PG_XACTS" -v n="${TG_SENT[$tg]}" 'BEGIN { printf "%.4f", n ? x / n : 0 }') per request sent"
		fi
		echo
	done
} >"$REPORT"

echo
cat "$REPORT"
if [[ -n ${BENCH_OUT:-} ]]; then
	cp "$REPORT" "$BENCH_OUT"
	log "report written to $BENCH_OUT"
fi
