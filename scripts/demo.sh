#!/usr/bin/env bash
# The main job (README.md): set up, build assay in release mode, and inspect the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product assay
.build/release/assay inspect Tests/Fixtures/tiny-model
