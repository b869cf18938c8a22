#!/usr/bin/env bash
# Installs the third-party MCP servers that tests/test_mcp_real.py starts:
#   PyPI mcp-server-time (stdio) into the project venv, and
#   npm @modelcontextprotocol/server-everything (streamable HTTP, SSE) into tests/.npm/.
# Idempotent: each step is skipped when its server is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LAR_VENV:-$ROOT/.venv}"
TIME_VERSION="2026.10.19"        # needs mcp>=2.3,<3: the same SDK as the project
EVERYTHING_VERSION="2026.8.31"
NPM_PREFIX="$ROOT/tests/.npm"
EVERYTHING_ENTRY="$NPM_PREFIX/node_modules/@modelcontextprotocol/server-everything/dist/index.js"

if [ -x "$VENV/bin/mcp-server-time" ]; then
    echo "mcp-server-time: already installed"
else
    if [ ! -x "$VENV/bin/python" ]; then
        echo "error: no venv at $VENV (create it first, or set LAR_VENV)" >&2
        exit 1
    fi
    echo "mcp-server-time: installing $TIME_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "mcp-server-time==$TIME_VERSION"
fi

if [ -f "$EVERYTHING_ENTRY" ]; then
    echo "server-everything: already installed"
else
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm is needed for @modelcontextprotocol/server-everything" >&2
        exit 1
    fi
    echo "server-everything: installing $EVERYTHING_VERSION into $NPM_PREFIX"
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION"
fi
