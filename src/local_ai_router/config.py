"""Settings: a YAML file, ``LAR_*`` environment overrides, ``${VAR}`` expansion.

Where the file comes from: ``--config FILE``, else ``$LAR_CONFIG``, else
``./local-ai-router.yaml``, else built-in defaults. Any key can be overridden by
the environment with ``__`` between levels (``LAR_SERVER__PORT=9000``,
``LAR_BACKENDS__0__URL=...``); values are read as YAML scalars. Secrets are
never stored in the file: a backend names the variable holding its key
(``api_key_env``). Every problem becomes a :class:`ConfigError` that names the
file, the key and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .types import ConfigError

__all__ = [
    "AgentConfig",
    "BackendConfig",
    "CompactionConfig",
    "HealthConfig",
    "PermissionsConfig",
    "RoutingConfig",
    "ServerConfig",
    "Settings",
    "StorageConfig",
    "SubagentsConfig",
    "default_home",
    "expand_vars",
    "load_settings",
]

DEFAULT_CONFIG_NAME = "local-ai-router.yaml"
ENV_PREFIX = "LAR_"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

BackendKind = Literal["openai", "vllm", "llamacpp", "ollama", "anthropic", "embedded"]
ToolMode = Literal["auto", "native", "text", "constrained"]
PermissionMode = Literal["auto", "ask", "acceptEdits", "plan", "bypassPermissions", "default"]


def default_home() -> Path:
    home = os.environ.get("LAR_HOME")
    if home:
        return Path(home).expanduser()
    return Path("~/.local/share/local-ai-router").expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8012, ge=0, le=65535)
    require_api_key: bool = False
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    request_log: bool = True


class StorageConfig(_Section):
    url: str = "sqlite+aiosqlite:///${LAR_HOME}/lar.db"


class BackendConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = ""
    kind: BackendKind = "openai"
    models: list[str] = Field(default_factory=list)
    priority: int = 1
    max_concurrent: int = Field(4, ge=1)
    api_key_env: str | None = None
    context_window: int | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    tool_mode: ToolMode = "auto"
    # embedded (llama.cpp) only
    model_path: str | None = None
    n_ctx: int = Field(4096, gt=0)
    n_threads: int | None = None
    chat_format: str | None = None

    @model_validator(mode="after")
    def _url_needed(self) -> BackendConfig:
        if self.kind != "embedded" and not self.url:
            raise ValueError("url is required (e.g. http://127.0.0.1:8000/v1)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self

    def api_key(self) -> str | None:
        """The key from the named environment variable (never from the file)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class HealthConfig(_Section):
    interval_s: float = Field(15.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    failures_to_unhealthy: int = Field(3, ge=1)


class RoutingConfig(_Section):
    small_token_threshold: int = Field(2000, ge=0)
    availability_url: str | None = None
    availability_backends: list[str] = Field(default_factory=list)
    availability_interval_s: float = Field(30.0, gt=0)
    availability_stale_s: float = Field(180.0, gt=0)
    queue_max_depth: int = Field(20, ge=0)
    queue_timeout_s: float = Field(120.0, gt=0)


class PermissionsConfig(_Section):
    mode: PermissionMode = "auto"
    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class CompactionConfig(_Section):
    threshold: float = Field(0.8, gt=0, le=1)
    reserve_tokens: int = Field(512, ge=0)
    keep_recent_messages: int = Field(6, ge=2)
    tool_output_keep_chars: int = Field(600, ge=100)


class SubagentsConfig(_Section):
    max_concurrent: int = Field(4, ge=1)
    max_depth: int = Field(2, ge=0)
    timeout_s: float = Field(600.0, gt=0)
    definitions: dict[str, dict[str, Any]] = Field(default_factory=dict)


class AgentConfig(_Section):
    workspace: str = "."
    workspace_roots: list[str] = Field(default_factory=list)
    model: str = "auto"
    max_steps: int = Field(50, ge=1, le=1000)
    max_tokens: int = Field(1024, gt=0)
    temperature: float | None = 0.2
    skills_dirs: list[str] = Field(
        default_factory=lambda: ["agents/skills", ".claude/skills", ".agents/skills"]
    )
    permissions: PermissionsConfig = Field(default_factory=PermissionsConfig)
    hooks: dict[str, Any] = Field(default_factory=dict)
    ask_timeout_s: float = Field(300.0, gt=0)
    load_claude_settings: bool = False
    sandbox: Literal["bwrap"] | None = None
    sandbox_network: bool = False
    tool_output_limit: int = Field(12_000, ge=500)
    # web_fetch and the browser tools: opt-in (prompt tokens; requests leave the machine)
    web_tools: bool = False
    web_allow_private: bool = False  # let them reach loopback and private networks
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    subagents: SubagentsConfig = Field(default_factory=SubagentsConfig)


class Settings(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    backends: list[BackendConfig] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=lambda: {"auto": "auto"})
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    mcp_servers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Where the settings came from, for messages; not a config key.
    source: str | None = Field(None, exclude=True)

    @field_validator("backends")
    @classmethod
    def _unique_names(cls, backends: list[BackendConfig]) -> list[BackendConfig]:
        seen: set[str] = set()
        for b in backends:
            if b.name in seen:
                raise ValueError(f"backend name {b.name!r} is used twice; names must be unique")
            seen.add(b.name)
        return backends

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        names = {b.name for b in self.backends}
        for name in self.routing.availability_backends:
            if self.backends and name not in names:
                raise ValueError(
                    f"routing.availability_backends names {name!r}, which is not a backend "
                    f"(known: {', '.join(sorted(names))})"
                )
        return self

    def backend(self, name: str) -> BackendConfig | None:
        return next((b for b in self.backends if b.name == name), None)


# --------------------------------------------------------------------------- loading


def expand_vars(value: Any, env: Mapping[str, str], *, path: str = "") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"${{{name}}} is not set; export it or write ${{{name}:-default}}", key=path or None
            )

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_vars(v, env, path=f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_vars(v, env, path=f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _set_path(tree: dict[str, Any], parts: list[str], value: Any, var: str) -> None:
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                raise ConfigError(f"{var}: {part!r} must be a list index", key=".".join(parts))
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = [] if parts[i + 1].isdigit() else {}
            node = node[part]


def apply_env_overrides(tree: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    sections = set(Settings.model_fields) - {"source"}
    for var, raw in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var in ("LAR_HOME", "LAR_CONFIG"):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in sections:
            if len(parts) > 1:
                raise ConfigError(
                    f"environment variable {var} names unknown section {parts[0]!r} "
                    f"(known: {', '.join(sorted(sections))})"
                )
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, parts, value, var)
    return tree


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_message(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = _format_loc(tuple(p for p in err["loc"] if not str(p).startswith("function-after")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see ARCHITECTURE.md section 3)"
    more = len(exc.errors()) - 1
    return loc, msg + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def find_config_file(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError("file not found", file=str(path))
        return path
    if env.get("LAR_CONFIG"):
        path = Path(env["LAR_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError("file named by $LAR_CONFIG not found", file=str(path))
        return path
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, expand, override and validate; raise ConfigError naming file and key."""
    environ = dict(os.environ if env is None else env)
    file = find_config_file(path, environ)
    where = str(file) if file else "(built-in defaults)"
    tree: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                f"invalid YAML{line}: {getattr(exc, 'problem', exc)}", file=where
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=where) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("top level must be a mapping of sections", file=where)
        tree = loaded
    expansion_env = {"LAR_HOME": str(default_home()), **environ}
    try:
        tree = expand_vars(tree, expansion_env)
        tree = apply_env_overrides(tree, environ)
        tree = expand_vars(tree, expansion_env)
        if overrides:
            for dotted, value in overrides.items():
                _set_path(tree, dotted.split("."), value, dotted)
        settings = Settings.model_validate(tree)
    except ConfigError as exc:
        raise ConfigError(exc.problem, file=where, key=exc.key) from None
    except ValidationError as exc:
        key, msg = _validation_message(exc)
        raise ConfigError(msg, file=where, key=key or None) from None
    settings.storage.url = expand_vars(settings.storage.url, expansion_env)
    settings.source = where
    return settings
