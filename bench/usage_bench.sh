#!/usr/bin/env bash
# Usage-API benchmark: generates N synthetic usage records into a fresh tollgate data dir
# (through Store::insert_usage, in 20,000-record transactions, so records and all rollups are
# written exactly as the batch writer writes them), then times every usage endpoint over HTTP on
# 127.0.0.1, the 30-day per-model per-day rollup read on its own, and a full CSV export.
#
#   bench/usage_bench.sh                                   # 1,000,000 records
#   USAGE_BENCH_RECORDS="100000 1000000 10000000" bench/usage_bench.sh
#
# Environment (all optional):
#   USAGE_BENCH_RECORDS     record counts to run, space-separated                   [1000000]
#   USAGE_BENCH_ITERATIONS  timed requests per endpoint (after 20 untimed)          [200]
#   USAGE_BENCH_OUT         also append the Markdown tables to this file            [unset]
#
# Data sets live in target/usage-bench/<N> and are reused when they already hold N records
# (10M records take ~3.5 minutes to load and 5.5 GB of disk).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RECORDS=${USAGE_BENCH_RECORDS:-1000000}
ITERATIONS=${USAGE_BENCH_ITERATIONS:-200}

cargo build --release -p tollgate --example usage_bench
for n in $RECORDS; do
    args=(--records "$n" --iterations "$ITERATIONS" --export)
    if [[ -n ${USAGE_BENCH_OUT:-} ]]; then
        args+=(--out "$USAGE_BENCH_OUT")
    fi
    target/release/examples/usage_bench "${args[@]}"
done
