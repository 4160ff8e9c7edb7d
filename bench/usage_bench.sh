#!/usr/bin/env bash
# Usage-API benchmark: generates N synthetic usage records into a fresh tollgate data dir
# (through Store::insert_usage, in 20,000-record transactions, so records and all rollups are
# written exactly as the batch writer writes them), then times every usage endpoint over HTTP on
# 127.0.0.1, the 30-day per-model per-day rollup read on its own, and a full CSV export.
#
#   bench/usage_bench.sh                                   # 1,000,000 records
#   USAGE_BENCH_RECORDS="100000 1000000 10000000" bench/usage_bench.sh
#   USAGE_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432 bench/usage_bench.sh
#
# Environment (all optional):
#   USAGE_BENCH_RECORDS     record counts to run, space-separated                   [1000000]
#   USAGE_BENCH_ITERATIONS  timed requests per endpoint (after 20 untimed)          [200]
#   USAGE_BENCH_OUT         also append the Markdown tables to this file            [unset]
#   USAGE_BENCH_POSTGRES    a PostgreSQL server (URL without a database name): use the
#                           PostgreSQL store, in database usage_bench_<N> on it, created
#                           with psql when missing                                  [unset: SQLite]
#
# Data sets live in target/usage-bench/<N> (SQLite) or in database usage_bench_<N> (PostgreSQL)
# and are reused when they already hold N records (10M records take ~3.5 minutes to load into
# SQLite and 5.5 GB of disk).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RECORDS=${USAGE_BENCH_RECORDS:-1000000}
ITERATIONS=${USAGE_BENCH_ITERATIONS:-200}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PG_SERVER=${USAGE_BENCH_POSTGRES:-}
PG_SERVER=${PG_SERVER%/}

cargo build --release -p tollgate --example usage_bench
for n in $RECORDS; do
    args=(--records "$n" --iterations "$ITERATIONS" --export)
    if [[ -n ${USAGE_BENCH_OUT:-} ]]; then
        args+=(--out "$USAGE_BENCH_OUT")
    fi
    if [[ -n $PG_SERVER ]]; then
        db="usage_bench_$n"
        if [[ -z $(psql "$PG_SERVER/postgres" -X -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
            psql "$PG_SERVER/postgres" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
            echo "created database $db on $PG_SERVER" >&2
        fi
        args+=(--postgres "$PG_SERVER/$db")
    fi
    "$TARGET_DIR/release/examples/usage_bench" "${args[@]}"
done
