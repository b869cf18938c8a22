"""``lar mcp list``: configured MCP servers, whether they start, and their tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .cli import ConfigOpt, WorkspaceOpt, err, fail, mcp_app, out, run_async, settings_or_exit
from .mcp_config import mcp_configs
from .types import ConfigError

__all__ = ["mcp_list"]


@mcp_app.command("list")
def mcp_list(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = ".",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start each configured server, list its tools, stop it again."""
    from .mcp import McpManager
    from .tools.registry import scrubbed_env

    settings = settings_or_exit(config)
    try:
        configs = mcp_configs(settings, Path(workspace).expanduser().resolve())
    except ConfigError as exc:
        fail(str(exc))
        return
    if not configs:
        err.print(
            "No MCP servers configured (.mcp.json in the workspace, or mcp_servers in the config)."
        )
        return

    async def probe() -> list[dict[str, Any]]:
        async with McpManager(configs, base_env=scrubbed_env()) as manager:
            await manager.start()
            return await manager.status()

    rows = run_async(probe)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("server", "transport", "status", "tools / error")
    for r in rows:
        detail = ", ".join(r["tools"]) if r["status"] == "running" else (r.get("error") or "")
        table.add_row(r["name"], r["transport"], r["status"], detail)
    out.print(table)
