#!/usr/bin/env bash
# Set up a development environment: .venv with the package, its dev and local extras,
# and the system tools the tests use. Idempotent; quick when everything is there.
#   LAR_SKIP_LOCAL=1   skip the [local] extra (llama.cpp compiles ~6 min the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
extras="dev,browser"
if [ "${LAR_SKIP_LOCAL:-0}" != "1" ]; then
  extras="dev,browser,local"
fi
echo "setup: installing local-ai-router[$extras] into .venv" >&2
.venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v -E "^(WARNING|  )" >&2 || true
.venv/bin/python -c "import local_ai_router" || { echo "setup: install failed" >&2; exit 1; }

# System tools used by tests: git (tools), bubblewrap (sandbox), jq (Claude Code-style hooks),
# chromium (the browser tools; Playwright drives it instead of downloading its own).
need=()
command -v git >/dev/null || need+=(git)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)  # scripts/demo.sh
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "setup: apt-get install ${need[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || echo "setup: could not install ${need[*]} (tests needing them will skip)" >&2
fi

if [ -x scripts/install_mcp_test_servers.sh ]; then
  bash scripts/install_mcp_test_servers.sh || echo "setup: MCP test servers not installed" >&2
fi
