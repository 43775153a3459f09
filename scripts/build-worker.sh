#!/usr/bin/env bash
# wrangler's [build] command for one worker crate: `bash scripts/build-worker.sh <crate>`.
# The run and test commands build every worker before starting wrangler and set
# BATON_SKIP_BUILD=1 so wrangler does not build them again.
set -euo pipefail
[ "${BATON_SKIP_BUILD:-0}" = 1 ] && exit 0
source "$(dirname "$0")/toolchain.sh"
ensure_toolchain
build_worker "$1"
