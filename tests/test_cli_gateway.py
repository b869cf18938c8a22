"""The gateway's commands: ``lar keys``, ``lar serve`` (its refusals, and a real start),
``lar backends`` -- through the real CLI against ScriptedBackend servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner, Result

from local_ai_router.cli import app
from local_ai_router.config import load_settings
from local_ai_router.gateway.keys import KeyStore
from local_ai_router.loopback import serve_app_in_thread
from local_ai_router.server import create_app
from local_ai_router.store.db import Database
from local_ai_router.testing import ScriptedBackend

LAR = Path(sys.executable).with_name("lar")


def write_config(path: Path, **tree: Any) -> str:
    tree.setdefault("storage", {"url": f"sqlite+aiosqlite:///{path.parent}/cli.db"})
    path.write_text(yaml.safe_dump(tree))
    return str(path)


@pytest.fixture
def config(tmp_path: Path) -> str:
    return write_config(tmp_path / "lar.yaml")


def lar(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def no_trace(result: Result) -> str:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return text


def verify(config: str, plaintext: str) -> Any:
    async def go() -> Any:
        db = await Database(load_settings(config).storage.url).open()
        try:
            return await KeyStore(db, cache_ttl_s=0).verify(plaintext)
        finally:
            await db.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------- keys


def test_keys_lifecycle(config: str, tmp_path: Path):
    r = lar("keys", "create", "ci-bot", "--scope", "chat", "--scope", "agent", "--config", config)
    assert r.exit_code == 0, r.stderr
    plaintext = r.stdout.strip()
    assert plaintext.startswith("lar-") and len(plaintext) > 30
    assert "not shown again" in r.stderr and plaintext not in r.stderr  # printed once
    key = verify(config, plaintext)
    assert key is not None and key.name == "ci-bot" and key.scopes == ("chat", "agent")

    r = lar("keys", "list", "--json", "--config", config)
    listed = json.loads(r.stdout)
    assert [(k["id"], k["name"], k["disabled"]) for k in listed] == [(key.id, "ci-bot", False)]
    assert plaintext not in r.stdout and listed[0]["prefix"] == plaintext[:10]
    table = lar("keys", "list", "--config", config)
    assert table.exit_code == 0 and key.id in table.stdout and plaintext not in table.stdout

    assert lar("keys", "disable", key.id, "--config", config).exit_code == 0
    assert verify(config, plaintext) is None
    assert json.loads(lar("keys", "list", "--json", "--config", config).stdout)[0]["disabled"]
    assert lar("keys", "enable", key.prefix, "--config", config).exit_code == 0  # by prefix
    assert verify(config, plaintext) is not None
    assert lar("keys", "delete", key.id, "--config", config).exit_code == 0
    assert verify(config, plaintext) is None
    assert json.loads(lar("keys", "list", "--json", "--config", config).stdout) == []
    # The plaintext is nowhere on disk, only its hash was ever stored.
    assert not any(plaintext.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_keys_bad_input_exits_cleanly(config: str):
    r = lar("keys", "create", "x", "--scope", "root", "--config", config)
    assert r.exit_code == 2 and "unknown scope(s) root" in no_trace(r)
    r = lar("keys", "create", "x", "--expires-days", "0", "--config", config)
    assert r.exit_code == 2 and "future" in no_trace(r)
    r = lar("keys", "disable", "nope", "--config", config)
    assert r.exit_code == 1 and "no key with id or prefix 'nope'" in no_trace(r)
    r = lar("keys", "list", "--config", "/no/such/file.yaml")
    assert r.exit_code == 2 and "file not found" in no_trace(r)


def test_expiring_key(config: str):
    r = lar("keys", "create", "temp", "--expires-days", "1", "--config", config)
    key = verify(config, r.stdout.strip())
    assert key is not None and 86000 < key.expires_at - key.created_at < 86800


# --------------------------------------------------------------------------- serve


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stand-in for uvicorn.run: these tests check what happens *before* serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    return calls


def test_serve_refuses_public_address_without_keys(tmp_path: Path, fake_uvicorn):
    open_cfg = write_config(tmp_path / "open.yaml")
    r = lar("serve", "--host", "0.0.0.0", "--config", open_cfg)
    text = no_trace(r)
    assert r.exit_code == 2 and "refusing to listen on 0.0.0.0" in text
    assert "require_api_key" in text and "--insecure" in text
    assert fake_uvicorn == []
    r = lar("serve", "--host", "0.0.0.0", "--insecure", "--config", open_cfg)
    assert r.exit_code == 0, r.stderr
    keyed = write_config(tmp_path / "keyed.yaml", server={"require_api_key": True})
    assert lar("serve", "--host", "0.0.0.0", "--port", "9123", "--config", keyed).exit_code == 0
    assert lar("serve", "--host", "localhost", "--config", open_cfg).exit_code == 0
    hosts = [(c["host"], c["port"]) for c in fake_uvicorn]
    assert hosts == [("0.0.0.0", 8012), ("0.0.0.0", 9123), ("localhost", 8012)]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("server: {port: abc}\n", ["server.port", "valid integer"]),
        ("server: {prot: 1}\n", ["server.prot", "unknown key"]),
        ("backends: [{name: a, url: ftp://x}]\n", ["backends[0]", "http://"]),
        ("server: [unclosed\n", ["invalid YAML", "line"]),
        ("storage: {url: 'nosuchdb://x'}\n", ["storage.url", "nosuchdb"]),
        ("storage: {url: '${NOT_SET_ANYWHERE}'}\n", ["storage.url", "NOT_SET_ANYWHERE"]),
    ],
)
def test_serve_bad_config_names_file_key_problem(
    tmp_path: Path, fake_uvicorn, content: str, expect: list[str]
):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    r = lar("serve", "--config", str(path))
    text = no_trace(r)
    assert r.exit_code == 2, text
    assert str(path) in text
    for word in expect:
        assert word in text
    assert fake_uvicorn == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lar_serve_end_to_end_with_keys(tmp_path: Path):
    """The real command in a subprocess, the official client, a key made by ``lar keys``."""
    backend = ScriptedBackend(["hello from upstream"], models=["m"])
    with backend.run_in_thread() as b:
        cfg = write_config(
            tmp_path / "lar.yaml",
            server={"require_api_key": True},
            backends=[{"name": "gpu", "url": b.url, "kind": "vllm", "models": ["m"]}],
        )
        key = lar("keys", "create", "e2e", "--config", cfg).stdout.strip()
        port = free_port()
        env = {**os.environ, "LAR_HOME": str(tmp_path / "home")}
        proc = subprocess.Popen(
            [str(LAR), "serve", "--config", cfg, "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                with contextlib.suppress(httpx2.HTTPError):
                    if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                assert proc.poll() is None, proc.communicate()[1].decode()
                time.sleep(0.05)
            oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
            reply = oa.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "hello from upstream"
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{base}/v1", api_key="lar-bad", max_retries=0).models.list()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=15)
    assert b"Traceback" not in err
    assert f"local-ai-router on http://127.0.0.1:{port}".encode() in err
    assert f"web UI http://127.0.0.1:{port}/ui".encode() in err


# --------------------------------------------------------------------------- backends


def test_backends_json_probes_each_backend(tmp_path: Path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    try:
        live = ScriptedBackend(models=["q1", "q2"], context_window=6000, kind="llamacpp")
        with live.run_in_thread() as b:
            cfg = write_config(
                tmp_path / "lar.yaml",
                backends=[
                    {"name": "live", "url": b.url, "kind": "llamacpp", "models": []},
                    {"name": "dead", "url": dead_url, "models": ["x"], "priority": 2},
                ],
            )
            r = lar("backends", "--json", "--config", cfg)
            table = lar("backends", "--config", cfg)
    finally:
        dead.close()
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["live"]["healthy"] is True and rows["live"]["kind"] == "llamacpp"
    assert rows["live"]["models"] == ["q1", "q2"]
    assert rows["live"]["context_windows"] == {"q1": 6000, "q2": 6000}
    assert rows["dead"]["healthy"] is False  # one failed probe is the verdict here
    assert rows["dead"]["last_error"] == "health check failed"
    assert table.exit_code == 0 and "live" in table.stdout and "down" in table.stdout


def test_backends_from_a_running_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with ScriptedBackend(models=["m"]).run_in_thread() as b:
        cfg = write_config(
            tmp_path / "lar.yaml",
            server={"require_api_key": True},
            health={"interval_s": 3600},
            backends=[{"name": "gpu", "url": b.url, "models": ["m"]}],
        )
        key = lar("keys", "create", "ops", "--scope", "admin", "--config", cfg).stdout.strip()
        with serve_app_in_thread(create_app(load_settings(cfg), with_agent=False)) as url:
            denied = lar("backends", "--server", url, "--config", cfg)
            monkeypatch.setenv("LAR_API_KEY", key)
            r = lar("backends", "--server", url, "--json", "--config", cfg)
    assert denied.exit_code == 2 and "HTTP 401" in no_trace(denied)
    assert "LAR_API_KEY" in denied.stderr
    assert r.exit_code == 0, r.stderr
    assert [(row["name"], row["healthy"]) for row in json.loads(r.stdout)] == [("gpu", True)]
    gone = lar("backends", "--server", url, "--config", cfg)  # the server has stopped
    assert gone.exit_code == 2 and "cannot reach" in no_trace(gone)
