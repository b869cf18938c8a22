"""Tools: typed async functions registered once.

A tool is an async function whose first parameter is the :class:`ToolContext`
and whose other parameters are its arguments, typed. :func:`tool` turns such a
function into a :class:`Tool`: a pydantic model built from the signature
validates the model's arguments, and the same signature yields both the native
(OpenAI ``tools``) schema and the one-line compact description used in text
mode. Tools from elsewhere (MCP servers) build a :class:`Tool` from a raw JSON
schema instead.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..types import ToolError

__all__ = [
    "Tool",
    "ToolContext",
    "ToolOutcome",
    "ToolRegistry",
    "scrubbed_env",
    "tool",
    "truncate",
]

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def scrubbed_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus anything that looks like a secret."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not any(m in k.upper() for m in SECRET_MARKERS)}


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of ``text`` and say how much was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:] if tail else ''}"


@dataclass
class ToolContext:
    """What a tool may know about the run calling it."""

    workspace: Path
    env: dict[str, str] = field(default_factory=scrubbed_env)
    output_limit: int = 20_000
    run_id: str = ""
    session_id: str = ""
    # Services some tools need (skills index, subagent spawner, sandbox, ...),
    # by name; keeps the tool signature uniform without global state.
    services: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ToolOutcome:
    ok: bool
    output: str
    error: str | None = None


ToolFn = Callable[..., Awaitable[str]]
Validator = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Tool:
    """One tool the model may call."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn
    validator: Validator
    read_only: bool = False
    # What the tool touches, for the permission gate: "read", "write", "shell", "other".
    kind: str = "other"

    def native_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def compact(self) -> str:
        """``name(arg: type, opt?: type) - description`` on one line."""
        props = self.parameters.get("properties", {}) or {}
        required = set(self.parameters.get("required", []) or [])
        parts = []
        for pname, pschema in props.items():
            opt = "" if pname in required else "?"
            parts.append(f"{pname}{opt}: {_type_name(pschema)}")
        return f"{self.name}({', '.join(parts)}) - {self.description}"

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validated arguments, or a ToolError naming the problem and the schema."""
        return self.validator(args)

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        return await self.fn(ctx, **args)


def _type_name(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        names = [_type_name(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return "|".join(names) or "any"
    t = schema.get("type")
    if t == "array":
        return f"[{_type_name(schema.get('items', {}))}]"
    if t == "object" and schema.get("properties"):
        inner = ", ".join(
            f"{k}{'' if k in set(schema.get('required', [])) else '?'}: {_type_name(v)}"
            for k, v in schema["properties"].items()
        )
        return "{" + inner + "}"
    if isinstance(t, list):
        return "|".join(str(x) for x in t if x != "null")
    return {"integer": "int", "string": "str", "boolean": "bool", "number": "float"}.get(
        str(t), str(t or "any")
    )


def _slim_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's titles and defaults: they cost prompt tokens and say nothing."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "default") or (key == "additionalProperties" and value is False):
            continue
        if key == "anyOf" and isinstance(value, list):
            non_null = [v for v in value if v.get("type") != "null"]
            if len(non_null) == 1:
                out.update(_slim_schema(non_null[0]))
                continue
        if isinstance(value, dict):
            out[key] = (
                {k: _slim_schema(v) for k, v in value.items()}
                if key in ("properties", "$defs")
                else _slim_schema(value)
            )
        elif isinstance(value, list):
            out[key] = [_slim_schema(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def format_validation_error(name: str, exc: ValidationError, schema_line: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        problems.append(f"{loc}: {err['msg']}")
    return f"invalid arguments for {name}: {'; '.join(problems)}. Expected: {schema_line}"


def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    read_only: bool = False,
    kind: str = "other",
) -> Callable[[ToolFn], Tool]:
    """Build a :class:`Tool` from ``async def fn(ctx, arg: T, opt: T | None = None) -> str``."""

    def wrap(fn: ToolFn) -> Tool:
        tool_name = name or fn.__name__
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        params = list(inspect.signature(fn).parameters.values())[1:]  # skip ctx
        for p in params:
            ann = hints.get(p.name, Any)
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (ann, default)
        model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )
        parameters = _slim_schema(_inline_refs(model.model_json_schema()))
        parameters.pop("additionalProperties", None)
        desc = description or (inspect.getdoc(fn) or tool_name).split("\n", 1)[0].strip()
        built = Tool(
            name=tool_name,
            description=desc,
            parameters=parameters,
            fn=fn,
            validator=lambda a: a,
            read_only=read_only,
            kind=kind,
        )

        def validate(args: dict[str, Any]) -> dict[str, Any]:
            try:
                obj = model.model_validate(args)
            except ValidationError as exc:
                raise ToolError(format_validation_error(tool_name, exc, built.compact())) from None
            # Plain JSON-able values: they are logged, audited and sent to hooks.
            return obj.model_dump()

        built.validator = validate
        return built

    return wrap


class ToolRegistry:
    """The tools offered to one run, by name, in registration order."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, t: Tool) -> Tool:
        if t.name in self._tools:
            raise ValueError(f"tool {t.name!r} registered twice")
        self._tools[t.name] = t
        return t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def subset(
        self, names: Iterable[str] | None = None, *, exclude: Iterable[str] = ()
    ) -> ToolRegistry:
        excluded = set(exclude)
        chosen = (
            self._tools if names is None else {n: self._tools[n] for n in names if n in self._tools}
        )
        return ToolRegistry(t for n, t in chosen.items() if n not in excluded)

    def native_schemas(self) -> list[dict[str, Any]]:
        return [t.native_schema() for t in self._tools.values()]

    def compact_text(self) -> str:
        return "\n".join(t.compact() for t in self._tools.values())

    def describe(self) -> list[dict[str, Any]]:
        """For ``GET /agent/tools``."""
        return [
            {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "read_only": t.read_only,
            }
            for t in self._tools.values()
        ]

    async def execute(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        """Run a validated call; a ToolError becomes a failed outcome, never an exception."""
        t = self._tools.get(name)
        if t is None:
            return ToolOutcome(
                False, "", f"unknown tool {name!r}; available: {', '.join(self._tools)}"
            )
        try:
            output = await t(ctx, args)
        except ToolError as exc:
            return ToolOutcome(False, "", str(exc))
        except Exception as exc:  # a tool bug must not end the run
            return ToolOutcome(False, "", f"{name} failed: {type(exc).__name__}: {exc}")
        return ToolOutcome(True, truncate(str(output), ctx.output_limit))


def json_compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
