#!/usr/bin/env bash
# wrangler's [build] command for one worker crate: `bash scripts/build-worker.sh <crate>`.
#   BATON_SKIP_BUILD=1      do nothing: the test command builds every worker before starting
#                           wrangler.
#   BATON_BUILD_IF_STALE=1  build only when a source is newer than the last build: `make dev`
#                           builds every worker first, so wrangler's start-up build is free, and
#                           a change under the config's watch_dir rebuilds that worker in the
#                           running stack.
set -euo pipefail
[ "${BATON_SKIP_BUILD:-0}" = 1 ] && exit 0
source "$(dirname "$0")/toolchain.sh"
if [ "${BATON_BUILD_IF_STALE:-0}" = 1 ] && ! worker_is_stale "$1"; then exit 0; fi
ensure_toolchain
build_worker "$1"
