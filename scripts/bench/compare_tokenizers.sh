#!/bin/sh
# Runs `assay bench tokenizer` and the Hugging Face reference on the same corpus, in one go.
set -eu
cd "$(dirname "$0")/../.."
DIR=${1:-Tests/Fixtures/tokenizers/smollm2}
CORPUS=$(mktemp /tmp/assay-corpus.XXXXXX)
trap 'rm -f "$CORPUS"' EXIT
swift build -c release --product assay >/dev/null
.build/release/assay bench tokenizer "$DIR" --write-corpus "$CORPUS" --json
.venv-fixtures/bin/python scripts/bench/tokenizers_reference.py --corpus "$CORPUS" --tokenizer "$DIR/tokenizer.json" --json
