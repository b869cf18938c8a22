"""MCP server configuration and the static side of MCP tools.

Everything here is pure (no I/O but reading ``.mcp.json``): the server config
dataclass and its parsers (Claude Code's ``.mcp.json`` shape, also used for the
``mcp_servers`` config key), tool naming, short descriptions, schema slimming,
a small JSON-schema argument checker, and the conversion of a tool result into
the text the model reads. :mod:`local_ai_router.mcp` does the connecting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mcp_types

from .types import ConfigError, ToolError

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "MCP_JSON",
    "McpServerConfig",
    "check_arguments",
    "expand_vars",
    "load_mcp_json",
    "mcp_configs",
    "mcp_tool_name",
    "parse_mcp_servers",
    "render_result",
    "short_description",
    "slim_schema",
    "with_hash",
]

MCP_JSON = ".mcp.json"
Transport = Literal["stdio", "http", "sse"]
_TRANSPORTS: dict[str, Transport] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamable_http": "http",
    "streamableHttp": "http",
    "sse": "sse",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")
MAX_TOOL_NAME = 64  # OpenAI's limit on function names


@dataclass
class McpServerConfig:
    """One MCP server: a command to spawn (stdio) or a URL (http / sse)."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    type: Transport = "stdio"
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    startup_timeout_s: float = 30.0
    call_timeout_s: float = 60.0

    def target(self) -> str:
        """What to show a person: the command line or the URL (never env or headers)."""
        if self.type == "stdio":
            return " ".join([self.command or "", *self.args]).strip()
        return self.url or ""


# --------------------------------------------------------------------------- parsing


def expand_vars(value: str, environ: Mapping[str, str], *, where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset ``${VAR}`` is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        current = environ.get(name)
        if default is not None:
            return current if current else default
        if current is None:
            raise ValueError(
                f"{where}: environment variable {name} is not set (use ${{{name}:-default}})"
            )
        return current

    return _VAR.sub(sub, value)


def load_mcp_json(
    workspace: Path, *, environ: Mapping[str, str] | None = None
) -> dict[str, McpServerConfig]:
    """The servers of ``<workspace>/.mcp.json`` (none when the file is absent)."""
    path = Path(workspace) / MCP_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read MCP servers: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object with an 'mcpServers' object", file=str(path))
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise ConfigError("'mcpServers' must be an object of name: server", file=str(path))
    configs = parse_mcp_servers(servers, source=str(path), environ=environ)
    for cfg in configs.values():
        if cfg.cwd is None:
            cfg.cwd = str(Path(workspace).resolve())  # Claude Code runs them in the project
    return configs


def mcp_configs(settings: Settings, workspace: Path) -> dict[str, McpServerConfig]:
    """A run's servers: config ``mcp_servers``, then the workspace's ``.mcp.json``, which wins
    on a name clash (as Claude Code's project scope overrides user scope)."""
    configs = parse_mcp_servers(
        settings.mcp_servers, source=f"{settings.source}: mcp_servers", expand=False
    )
    configs.update(load_mcp_json(workspace))
    return configs


def parse_mcp_servers(
    mapping: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    expand: bool = True,
) -> dict[str, McpServerConfig]:
    """``{name: {command, args, env} | {type, url, headers}}`` into configs.

    ``source`` names where the mapping came from (a file, a config key) in errors.
    ``expand=False`` when the caller has already expanded ``${VAR}`` references.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError("MCP servers must be an object of name: server", file=source)
    env_source = os.environ if environ is None else environ
    out: dict[str, McpServerConfig] = {}
    for name, spec in mapping.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"MCP server name {name!r} must be a non-empty string", file=source)
        try:
            out[name] = _parse_one(name, spec, env_source if expand else None)
        except ValueError as exc:
            raise ConfigError(f"MCP server {name!r}: {exc}", file=source, key=name) from None
    return out


def _parse_one(name: str, spec: Any, environ: Mapping[str, str] | None) -> McpServerConfig:
    if not isinstance(spec, Mapping):
        raise ValueError("expected an object with 'command' or 'url'")

    def text(value: Any, key: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"'{key}' must be a string, not {_json_type(value)}")
        s = str(value)
        return expand_vars(s, environ, where=f"'{key}'") if environ is not None else s

    def str_map(key: str) -> dict[str, str]:
        raw = spec.get(key) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"'{key}' must be an object of strings")
        return {str(k): text(v, f"{key}.{k}") for k, v in raw.items()}

    kind = spec.get("type")
    if kind is None:
        kind = "stdio" if "command" in spec or "url" not in spec else "http"
    if kind not in _TRANSPORTS:
        raise ValueError(f"'type' must be one of stdio, http, sse, not {kind!r}")
    cfg = McpServerConfig(name=name, type=_TRANSPORTS[kind])
    cfg.startup_timeout_s = _seconds(spec, "startup_timeout_s", cfg.startup_timeout_s)
    cfg.call_timeout_s = _seconds(spec, "call_timeout_s", cfg.call_timeout_s)
    if cfg.type == "stdio":
        if not spec.get("command"):
            raise ValueError("a stdio server needs 'command'")
        cfg.command = text(spec["command"], "command")
        args = spec.get("args") or []
        if not isinstance(args, list):
            raise ValueError("'args' must be a list of strings")
        cfg.args = [text(a, f"args[{i}]") for i, a in enumerate(args)]
        cfg.env = str_map("env")
        if spec.get("cwd") is not None:
            cfg.cwd = text(spec["cwd"], "cwd")
    else:
        if not spec.get("url"):
            raise ValueError(f"an {cfg.type} server needs 'url'")
        cfg.url = text(spec["url"], "url")
        if not cfg.url.startswith(("http://", "https://")):
            raise ValueError(f"'url' must start with http:// or https://, not {cfg.url!r}")
        cfg.headers = str_map("headers")
    return cfg


def _seconds(spec: Mapping[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"'{key}' must be a positive number of seconds, not {value!r}")
    return float(value)


# --------------------------------------------------------------------------- naming


def _sanitize(part: str) -> str:
    return _NAME_BAD.sub("_", part) or "_"


def mcp_tool_name(server: str, tool: str) -> str:
    """``mcp__<server>__<tool>`` within ``^[a-zA-Z0-9_-]{1,64}$``.

    Other characters become ``_``; an over-long name keeps its head and gets a
    hash of the original names, so two long names never collide.
    """
    name = f"mcp__{_sanitize(server)}__{_sanitize(tool)}"
    if len(name) <= MAX_TOOL_NAME:
        return name
    return with_hash(name, f"{server}\0{tool}")


def with_hash(name: str, key: str) -> str:
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return f"{name[: MAX_TOOL_NAME - len(digest) - 1]}_{digest}"


def short_description(text: str | None, fallback: str, limit: int = 80) -> str:
    """The first sentence of ``text``, at most ``limit`` characters."""
    flat = " ".join((text or "").split())
    if not flat:
        return fallback[:limit]
    m = re.match(r"(.+?[.!?])(?:\s|$)", flat)
    first = m.group(1) if m else flat
    if len(first) <= limit:
        return first
    cut = first[: limit - 3]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "..."


def slim_schema(schema: Any) -> dict[str, Any]:
    """The server's input schema without ``title`` / ``$schema`` (prompt tokens, no meaning)."""

    def walk(node: Any, in_props: bool = False) -> Any:
        if isinstance(node, dict):
            return {
                k: walk(v, in_props=(k in ("properties", "$defs", "definitions") and not in_props))
                for k, v in node.items()
                if in_props or k not in ("title", "$schema")
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(schema) if isinstance(schema, dict) else {}
    out.setdefault("type", "object")
    if out["type"] == "object":
        out.setdefault("properties", {})
    return out


# --------------------------------------------------------------------------- arguments


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is(value: Any, t: str) -> bool:
    actual = _json_type(value)
    if t == "number":
        return actual in ("integer", "number")
    if t == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == t


def _coerce(value: Any, t: str) -> tuple[bool, Any]:
    """Repair what weak models get wrong most: numbers and booleans sent as strings."""
    if isinstance(value, str):
        s = value.strip()
        if t == "integer" and re.fullmatch(r"-?\d+", s):
            return True, int(s)
        if t == "number":
            try:
                f = float(s)
            except ValueError:
                return False, value
            if math.isfinite(f):
                return True, int(f) if re.fullmatch(r"-?\d+", s) else f
        if t == "boolean" and s.lower() in ("true", "false"):
            return True, s.lower() == "true"
        if t in ("array", "object") and s[:1] in "[{":
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                return False, value
            return _is(parsed, t), parsed
    if t == "string" and _json_type(value) in ("integer", "number"):
        return True, str(value)
    if t == "integer" and _is(value, "integer"):
        return True, int(value)
    return False, value


class _Checker:
    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.problems: list[str] = []

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        for _ in range(20):  # bounded: a $ref cycle must not hang the check
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return schema
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                return {}
            schema = node
        return {}

    def check(self, value: Any, schema: Any, path: str, depth: int = 0) -> Any:
        if not isinstance(schema, dict) or depth > 30:
            return value
        schema = self.resolve(schema)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                value = self.check_any(value, schema[key], path, depth)
        for sub in schema.get("allOf") or []:
            value = self.check(value, sub, path, depth + 1)
        types = schema.get("type")
        if isinstance(types, str):
            types = [types]
        if isinstance(types, list) and types and not any(_is(value, t) for t in types):
            for t in types:
                ok, fixed = _coerce(value, t)
                if ok:
                    value = fixed
                    break
            else:
                self.problems.append(f"{path}: expected {'|'.join(types)}, got {_json_type(value)}")
                return value
        if isinstance(value, float) and types == ["integer"]:
            value = int(value)
        if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"][:10])
            self.problems.append(f"{path}: must be one of {allowed}")
        if isinstance(value, dict):
            return self.check_object(value, schema, path, depth)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [
                self.check(v, schema["items"], f"{path}[{i}]", depth + 1)
                for i, v in enumerate(value)
            ]
        return value

    def check_any(self, value: Any, options: list[Any], path: str, depth: int) -> Any:
        for option in options:
            trial = _Checker(self.root)
            fixed = trial.check(value, option, path, depth + 1)
            if not trial.problems:
                return fixed
        self.problems.append(f"{path}: does not match any allowed form")
        return value

    def check_object(self, value: dict[str, Any], schema: dict[str, Any], path: str, depth: int):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        prefix = f"{path}." if path else ""
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = props.get(key)
            if item is None and key not in required and (sub is None or not self.allows_null(sub)):
                continue  # weak models send null for "not given"
            if sub is None and schema.get("additionalProperties") is False:
                self.problems.append(f"{prefix}{key}: unknown argument")
                continue
            out[key] = self.check(item, sub, f"{prefix}{key}", depth + 1)
        missing = [r for r in required if r not in out]
        if missing:
            self.problems.append(f"missing required {', '.join(prefix + m for m in missing)}")
        return out

    def allows_null(self, schema: dict[str, Any]) -> bool:
        probe = _Checker(self.root)
        probe.check(None, schema, "")
        return not probe.problems


def check_arguments(args: Any, schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Arguments checked (and lightly repaired) against a JSON schema, plus the problems."""
    if not isinstance(args, dict):
        return {}, [f"arguments must be a JSON object, got {_json_type(args)}"]
    checker = _Checker(schema)
    fixed = checker.check(args, {**schema, "type": "object"}, "")
    return fixed if isinstance(fixed, dict) else {}, checker.problems


# --------------------------------------------------------------------------- results


def _b64_size(data: str) -> int:
    s = "".join(data.split())
    return max(0, len(s) * 3 // 4 - (len(s) - len(s.rstrip("="))))


def _render_block(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_b64_size(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        mime = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link: {block.name} {block.uri}{mime}]"
    if isinstance(block, mcp_types.EmbeddedResource):
        res = block.resource
        if isinstance(res, mcp_types.TextResourceContents):
            return res.text
        mime = f"{res.mime_type}, " if res.mime_type else ""
        return f"[resource: {res.uri}, {mime}{_b64_size(res.blob)} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def render_result(result: mcp_types.CallToolResult, *, tool: str) -> str:
    """The text the model reads; an error result raises :class:`ToolError` with its text."""
    parts = [_render_block(b) for b in result.content]
    text = "\n".join(p for p in parts if p)
    has_text = any(isinstance(b, mcp_types.TextContent) and b.text for b in result.content)
    if not has_text and result.structured_content is not None:
        structured = json.dumps(
            result.structured_content, separators=(",", ":"), ensure_ascii=False, default=str
        )
        text = f"{text}\n{structured}" if text else structured
    if result.is_error:
        raise ToolError(text or f"{tool} reported an error without a message")
    return text
