#!/usr/bin/env bash
# Set up (see setup.sh) and run every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
