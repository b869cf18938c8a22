"""Unit tests of the MCP tool source: config parsing, naming, the argument checker,
result rendering and the connection lifecycle, against in-process servers built
with the SDK (no subprocess, no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest
from mcp.client._memory import InMemoryTransport
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as ServerToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.memory import create_client_server_memory_streams
from mcp_types.jsonrpc import INVALID_PARAMS

from local_ai_router.mcp import McpManager, McpServer, McpStartFailure
from local_ai_router.mcp_config import (
    McpServerConfig,
    check_arguments,
    load_mcp_json,
    mcp_tool_name,
    parse_mcp_servers,
    render_result,
    short_description,
    slim_schema,
)
from local_ai_router.tools.registry import ToolContext, ToolRegistry
from local_ai_router.types import ConfigError, ToolError

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


# --------------------------------------------------------------------------- .mcp.json


def write_mcp_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / ".mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_mcp_json_claude_code_shape_with_var_expansion(tmp_path: Path) -> None:
    write_mcp_json(
        tmp_path,
        {
            "mcpServers": {
                "files": {
                    "command": "${TOOLS_DIR:-/opt/tools}/fs-server",
                    "args": ["--root", "${ROOT}", "--mode=${MODE:-ro}"],
                    "env": {"API_TOKEN": "${MY_TOKEN}", "EMPTY_DEFAULT": "${UNSET_VAR:-}"},
                },
                "remote": {
                    "type": "http",
                    "url": "https://${HOST:-example.test}/mcp",
                    "headers": {"Authorization": "Bearer ${MY_TOKEN}"},
                },
                "events": {"type": "sse", "url": "http://127.0.0.1:${PORT:-3001}/sse"},
            }
        },
    )
    env = {"ROOT": "/data", "MY_TOKEN": "t0k", "MODE": "", "HOST": "mcp.internal"}
    servers = load_mcp_json(tmp_path, environ=env)

    files = servers["files"]
    assert files.type == "stdio"
    assert files.command == "/opt/tools/fs-server"  # unset -> default
    assert files.args == ["--root", "/data", "--mode=ro"]  # empty -> default, like the shell
    assert files.env == {"API_TOKEN": "t0k", "EMPTY_DEFAULT": ""}
    assert files.cwd == str(tmp_path.resolve())  # Claude Code runs them in the project

    remote = servers["remote"]
    assert (remote.type, remote.url) == ("http", "https://mcp.internal/mcp")
    assert remote.headers == {"Authorization": "Bearer t0k"}
    assert servers["events"].type == "sse"
    assert servers["events"].url == "http://127.0.0.1:3001/sse"
    assert remote.target() == "https://mcp.internal/mcp"  # no headers: they hold secrets


def test_mcp_json_absent_means_no_servers(tmp_path: Path) -> None:
    assert load_mcp_json(tmp_path) == {}


def test_mcp_json_unset_variable_is_a_clear_error(tmp_path: Path) -> None:
    path = write_mcp_json(tmp_path, {"mcpServers": {"gh": {"command": "x", "env": {"T": "${GH}"}}}})
    with pytest.raises(ConfigError) as err:
        load_mcp_json(tmp_path, environ={})
    msg = str(err.value)
    assert str(path) in msg and "'gh'" in msg and "GH is not set" in msg


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ({"a": "npx server"}, "expected an object"),
        ({"a": {"args": ["x"]}}, "needs 'command'"),
        ({"a": {"command": "x", "args": "--flag"}}, "'args' must be a list"),
        ({"a": {"command": "x", "args": [["nested"]]}}, "'args[0]' must be a string"),
        ({"a": {"command": "x", "env": ["A=1"]}}, "'env' must be an object"),
        ({"a": {"type": "websocket", "url": "ws://x"}}, "'type' must be one of"),
        ({"a": {"type": "http"}}, "needs 'url'"),
        ({"a": {"type": "sse", "url": "ftp://host/sse"}}, "must start with http"),
        ({"a": {"command": "x", "call_timeout_s": -1}}, "positive number"),
        ({"a": {"command": "x", "startup_timeout_s": "soon"}}, "positive number"),
    ],
)
def test_mcp_json_bad_shapes_name_file_and_server(
    tmp_path: Path, servers: dict[str, Any], problem: str
) -> None:
    path = write_mcp_json(tmp_path, {"mcpServers": servers})
    with pytest.raises(ConfigError) as err:
        load_mcp_json(tmp_path, environ={})
    msg = str(err.value)
    assert str(path) in msg and "MCP server 'a'" in msg and problem in msg


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read"),
        ("[1, 2]", "expected a JSON object"),
        ('{"mcpServers": 3}', "must be an object"),
    ],
)
def test_mcp_json_bad_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write_mcp_json(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_mcp_json(tmp_path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_parse_config_servers_with_source_and_no_double_expansion() -> None:
    servers = parse_mcp_servers(
        {
            "t": {
                "command": "srv",
                "args": ["${KEEP}"],
                "startup_timeout_s": 5,
                "call_timeout_s": 2.5,
            }
        },
        source="lar.yaml: mcp_servers",
        expand=False,
    )
    t = servers["t"]
    assert t.args == ["${KEEP}"]  # the config loader already expanded
    assert (t.startup_timeout_s, t.call_timeout_s, t.cwd) == (5.0, 2.5, None)
    with pytest.raises(ConfigError, match=r"lar\.yaml: mcp_servers"):
        parse_mcp_servers({"t": {"type": "http"}}, source="lar.yaml: mcp_servers")


# --------------------------------------------------------------------------- names, schemas


def test_tool_names_are_sanitized_and_bounded() -> None:
    assert mcp_tool_name("time", "get_current_time") == "mcp__time__get_current_time"
    assert mcp_tool_name("my server.v2", "do/thing!") == "mcp__my_server_v2__do_thing_"
    long_a = mcp_tool_name("s" * 30, "t" * 40 + "a")
    long_b = mcp_tool_name("s" * 30, "t" * 40 + "b")
    for name in (long_a, long_b, mcp_tool_name("", ""), mcp_tool_name("ü" * 80, "ß")):
        assert NAME_RE.match(name), name
    assert long_a != long_b and len(long_a) == 64


def test_short_description() -> None:
    assert short_description("Get the time. Uses IANA names.", "x") == "Get the time."
    assert (
        short_description("  multi\n line   text without end", "x") == "multi line text without end"
    )
    long = short_description("word " * 40, "x")
    assert len(long) <= 80 and long.endswith("...")
    assert short_description(None, "fallback title") == "fallback title"
    assert short_description("Version 1.2 is here. More.", "x") == "Version 1.2 is here."


def test_slim_schema_drops_titles_but_keeps_a_property_named_title() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "args",
        "type": "object",
        "properties": {"title": {"type": "string", "title": "Title"}, "n": {"type": "integer"}},
        "required": ["title"],
    }
    assert slim_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["title"],
    }
    assert slim_schema({}) == {"type": "object", "properties": {}}


# --------------------------------------------------------------------------- argument checker

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "force": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "opts": {"$ref": "#/$defs/Opts"},
        "when": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    },
    "required": ["path"],
    "$defs": {
        "Opts": {
            "type": "object",
            "properties": {"depth": {"type": "integer"}},
            "required": ["depth"],
            "additionalProperties": False,
        }
    },
}


def test_checker_accepts_and_repairs_what_weak_models_send() -> None:
    fixed, problems = check_arguments(
        {
            "path": "a.txt",
            "count": "3",
            "ratio": "0.5",
            "force": "true",
            "tags": '["x", "y"]',
            "opts": {"depth": 2.0},
            "mode": None,  # "not given"
            "when": None,  # explicitly nullable: kept
        },
        SCHEMA,
    )
    assert problems == []
    assert fixed == {
        "path": "a.txt",
        "count": 3,
        "ratio": 0.5,
        "force": True,
        "tags": ["x", "y"],
        "opts": {"depth": 2},
        "when": None,
    }


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({}, "missing required path"),
        ({"path": ["a"]}, "path: expected string, got array"),
        ({"path": "a", "count": "three"}, "count: expected integer, got string"),
        ({"path": "a", "count": 1.5}, "count: expected integer, got number"),
        ({"path": "a", "force": "yes"}, "force: expected boolean, got string"),
        ({"path": "a", "mode": "medium"}, 'mode: must be one of "fast", "slow"'),
        ({"path": "a", "tags": ["ok", {"no": 1}]}, "tags[1]: expected string, got object"),
        ({"path": "a", "opts": {}}, "missing required opts.depth"),
        ({"path": "a", "opts": {"depth": 1, "extra": 2}}, "opts.extra: unknown argument"),
        ({"path": "a", "when": "later"}, "when: does not match any allowed form"),
        ("path=a", "arguments must be a JSON object, got string"),
    ],
)
def test_checker_names_the_problem(args: Any, problem: str) -> None:
    _, problems = check_arguments(args, SCHEMA)
    assert any(problem in p for p in problems), problems


def test_checker_survives_a_ref_cycle_and_odd_schemas() -> None:
    cyclic = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"$ref": "#/$defs/A"}},
    }
    assert check_arguments({"a": 1}, cyclic) == ({"a": 1}, [])
    assert check_arguments({"x": 1}, {"properties": "nonsense"}) == ({"x": 1}, [])


# --------------------------------------------------------------------------- in-process servers


def tool_server() -> MCPServer:
    app = MCPServer("unit")

    @app.tool(annotations=mcp_types.ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int = 2) -> int:
        """Add two integers. Returns their sum as a number."""
        return a + b

    @app.tool()
    def shout(text: str, times: int = 1) -> str:
        """Repeat text in capitals, many times over, for the sake of a long description line."""
        return " ".join([text.upper()] * times)

    @app.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ServerToolError(f"cannot do it: {reason}")

    @app.tool()
    async def nap(seconds: float) -> str:
        """Sleep a while."""
        await anyio.sleep(seconds)
        return "awake"

    return app


def manager_for(app: MCPServer | Server, **cfg: Any) -> McpManager:
    config = McpServerConfig("unit", **cfg)
    return McpManager([config], transport=lambda _cfg, _log: InMemoryTransport(app))


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, output_limit=20_000)


async def test_tools_from_an_sdk_server(ctx: ToolContext) -> None:
    async with manager_for(tool_server()) as manager:
        assert await manager.start() == []
        tools = {t.name: t for t in manager.tools()}
        assert set(tools) == {
            "mcp__unit__add",
            "mcp__unit__shout",
            "mcp__unit__fail",
            "mcp__unit__nap",
        }
        add = tools["mcp__unit__add"]
        assert add.description == "Add two integers."
        assert add.read_only and not tools["mcp__unit__shout"].read_only
        assert add.kind == "other"
        assert add.parameters["required"] == ["a"]
        assert add.parameters["properties"]["a"]["type"] == "integer"
        assert "title" not in json.dumps(add.parameters)
        assert len(tools["mcp__unit__shout"].description) <= 80
        assert add.compact().startswith("mcp__unit__add(a: int, b?: int) - ")

        # The model's "2" repaired by the validator, then a real round trip.
        args = add.validate({"a": "40", "b": 2})
        assert await add(ctx, args) == "42"

        registry = ToolRegistry(manager.tools())
        outcome = await registry.execute("mcp__unit__shout", {"text": "hi", "times": 3}, ctx)
        assert (outcome.ok, outcome.output) == (True, "HI HI HI")


async def test_validator_error_names_problem_and_schema() -> None:
    async with manager_for(tool_server()) as manager:
        await manager.start()
        add = next(t for t in manager.tools() if t.name == "mcp__unit__add")
        with pytest.raises(ToolError) as err:
            add.validate({"b": "x"})
        msg = str(err.value)
        assert msg.startswith("invalid arguments for mcp__unit__add:")
        assert "missing required a" in msg and "b: expected integer, got string" in msg
        assert "Expected: mcp__unit__add(a: int, b?: int)" in msg


async def test_tool_error_result_becomes_failed_outcome(ctx: ToolContext) -> None:
    async with manager_for(tool_server()) as manager:
        await manager.start()
        registry = ToolRegistry(manager.tools())
        outcome = await registry.execute("mcp__unit__fail", {"reason": "no disk"}, ctx)
        assert not outcome.ok and "cannot do it: no disk" in (outcome.error or "")
        # A tool the server does not know is an error result too, and the server stays up.
        server = manager.servers["unit"]
        unknown = await server.call_tool("no_such_tool", {})
        with pytest.raises(ToolError, match="no_such_tool"):
            render_result(unknown, tool="mcp__unit__no_such_tool")
        assert server.state == "running"
        assert (await registry.execute("mcp__unit__add", {"a": 1}, ctx)).output == "3"


async def test_output_is_capped(tmp_path: Path) -> None:
    small = ToolContext(workspace=tmp_path, output_limit=60)
    async with manager_for(tool_server()) as manager:
        await manager.start()
        shout = next(t for t in manager.tools() if t.name == "mcp__unit__shout")
        out = await shout(small, {"text": "abcdefghij", "times": 50})
        assert len(out) < 200 and "characters cut" in out and out.startswith("ABCDEFGHIJ")


async def test_per_call_timeout_then_server_still_serves(ctx: ToolContext) -> None:
    async with manager_for(tool_server(), call_timeout_s=0.3) as manager:
        await manager.start()
        tools = {t.name: t for t in manager.tools()}
        with pytest.raises(ToolError, match=r"nap on MCP server 'unit' timed out after 0.3s"):
            await tools["mcp__unit__nap"](ctx, {"seconds": 30})
        assert await tools["mcp__unit__add"](ctx, {"a": 5}) == "7"


# --------------------------------------------------------------------------- result rendering

PNG = base64.b64encode(b"\x89PNG" + bytes(1000)).decode()
WAV = base64.b64encode(bytes(333)).decode()


def result(*content: Any, structured: Any = None, error: bool = False) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=list(content), structured_content=structured, is_error=error
    )


def test_render_text_media_and_resources() -> None:
    text = render_result(
        result(
            mcp_types.TextContent(text="here:"),
            mcp_types.ImageContent(data=PNG, mime_type="image/png"),
            mcp_types.AudioContent(data=WAV, mime_type="audio/wav"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(uri="file:///a.txt", text="inside a")
            ),
            mcp_types.EmbeddedResource(
                resource=mcp_types.BlobResourceContents(
                    uri="file:///b.bin",
                    blob=base64.b64encode(bytes(10)).decode(),
                    mime_type="application/zip",
                )
            ),
            mcp_types.ResourceLink(name="doc", uri="file:///doc.md", mime_type="text/markdown"),
        ),
        tool="t",
    )
    assert text.split("\n") == [
        "here:",
        "[image: image/png, 1004 bytes]",
        "[audio: audio/wav, 333 bytes]",
        "inside a",
        "[resource: file:///b.bin, application/zip, 10 bytes]",
        "[resource link: doc file:///doc.md, text/markdown]",
    ]


def test_render_structured_only_and_errors() -> None:
    assert (
        render_result(result(structured={"t": 21.5, "ok": True}), tool="t")
        == '{"t":21.5,"ok":true}'
    )
    # Text wins over structured content: servers send both, the text is for the model.
    both = result(mcp_types.TextContent(text="21.5 degrees"), structured={"t": 21.5})
    assert render_result(both, tool="t") == "21.5 degrees"
    with pytest.raises(ToolError, match=r"^quota exceeded$"):
        render_result(result(mcp_types.TextContent(text="quota exceeded"), error=True), tool="t")
    with pytest.raises(ToolError, match="t reported an error without a message"):
        render_result(result(error=True), tool="t")


def media_server() -> Server:
    """A low-level server returning whatever content the test asks for."""
    contents: dict[str, mcp_types.CallToolResult] = {
        "picture": result(
            mcp_types.ImageContent(data=PNG, mime_type="image/png"),
            mcp_types.TextContent(text="a logo"),
        ),
        "data": result(structured={"rows": [1, 2]}),
        "broken": result(error=True),
    }

    async def list_tools(_ctx: Any, _params: Any) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(
            tools=[
                mcp_types.Tool(name=n, description=f"{n}.", input_schema={"type": "object"})
                for n in [*contents, "reject"]
            ]
        )

    async def call_tool(_ctx: Any, params: mcp_types.CallToolRequestParams) -> Any:
        if params.name == "reject":  # a JSON-RPC error, not an error result
            code = (params.arguments or {}).get("code", INVALID_PARAMS)
            raise MCPError(code=code, message="the server says no")
        return contents[params.name]

    return Server("media", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_media_round_trip_through_the_sdk(ctx: ToolContext) -> None:
    async with manager_for(media_server()) as manager:
        await manager.start()
        registry = ToolRegistry(manager.tools())
        pic = await registry.execute("mcp__unit__picture", {}, ctx)
        assert pic.output == "[image: image/png, 1004 bytes]\na logo"
        assert (await registry.execute("mcp__unit__data", {}, ctx)).output == '{"rows":[1,2]}'
        broken = await registry.execute("mcp__unit__broken", {}, ctx)
        assert not broken.ok and "without a message" in (broken.error or "")


async def test_protocol_errors_are_tool_errors_and_keep_the_server(ctx: ToolContext) -> None:
    async with manager_for(media_server()) as manager:
        await manager.start()
        registry = ToolRegistry(manager.tools())
        # -32000 is also the SDK's "connection closed" code: a server using it must not
        # be taken for dead.
        for code in (INVALID_PARAMS, -32000):
            outcome = await registry.execute("mcp__unit__reject", {"code": code}, ctx)
            assert not outcome.ok
            assert outcome.error == "MCP server 'unit' rejected reject: the server says no"
            assert manager.servers["unit"].alive and manager.servers["unit"].starts == 1


# --------------------------------------------------------------------------- lifecycle


class Killable:
    """An in-process transport whose server side the test can cut, like a crash."""

    def __init__(self, server: Server):
        self.server = server
        self.connections = 0
        self._cut: list[Any] = []

    @asynccontextmanager
    async def connect(self, _cfg: McpServerConfig, _log: Any) -> AsyncIterator[Any]:
        self.connections += 1
        async with create_client_server_memory_streams() as (client_side, server_side):
            self._cut.append(server_side[1])
            async with anyio.create_task_group() as tg:
                options = self.server.create_initialization_options()
                tg.start_soon(self.server.run, server_side[0], server_side[1], options)
                try:
                    yield client_side
                finally:
                    tg.cancel_scope.cancel()

    async def crash(self) -> None:
        await self._cut[-1].aclose()  # the client's read stream ends: the server is gone


async def test_lost_connection_fails_the_call_then_restarts(ctx: ToolContext) -> None:
    killable = Killable(media_server())
    manager = McpManager([McpServerConfig("unit")], transport=killable.connect)
    try:
        await manager.start()
        registry = ToolRegistry(manager.tools())
        server = manager.servers["unit"]
        await killable.crash()
        with anyio.fail_after(10):
            while server.alive:  # the owner task notices the end of the stream  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert [s["status"] for s in await manager.status()] == ["failed"]
        # The next call restarts the server transparently.
        outcome = await registry.execute("mcp__unit__data", {}, ctx)
        assert outcome.ok and outcome.output == '{"rows":[1,2]}'
        assert killable.connections == 2 and server.state == "running"
    finally:
        await manager.aclose()


async def test_start_call_and_stop_from_different_tasks(ctx: ToolContext) -> None:
    manager = manager_for(tool_server())
    starter = asyncio.create_task(manager.start())
    assert await starter == []
    add = next(t for t in manager.tools() if t.name == "mcp__unit__add")
    # Concurrent calls from other tasks share the one connection.
    results = await asyncio.gather(*(asyncio.create_task(add(ctx, {"a": i})) for i in range(8)))
    assert results == [str(i + 2) for i in range(8)]
    await asyncio.create_task(manager.aclose())
    status = await manager.status()
    assert status[0]["status"] == "stopped" and status[0]["tools"][0] == "mcp__unit__add"
    with pytest.raises(ToolError, match="is stopped"):
        await add(ctx, {"a": 1})


async def test_start_failures_are_reported_not_raised() -> None:
    @asynccontextmanager
    async def refused(_cfg: McpServerConfig, _log: Any) -> AsyncIterator[Any]:
        raise ConnectionRefusedError("connection refused")
        yield  # pragma: no cover

    @asynccontextmanager
    async def hangs(_cfg: McpServerConfig, _log: Any) -> AsyncIterator[Any]:
        await anyio.sleep_forever()
        yield  # pragma: no cover

    good = tool_server()
    factories = {"good": lambda c, log: InMemoryTransport(good), "refused": refused, "hangs": hangs}
    configs = [
        McpServerConfig("good"),
        McpServerConfig("refused"),
        McpServerConfig("hangs", startup_timeout_s=0.2),
    ]
    async with McpManager(configs, transport=lambda c, log: factories[c.name](c, log)) as manager:
        failures = await manager.start()
        by_name = {f.server: f for f in failures}
        assert set(by_name) == {"refused", "hangs"}
        assert isinstance(by_name["hangs"], McpStartFailure)
        assert "connection refused" in by_name["refused"].error
        assert by_name["hangs"].error == "did not start within 0.2s"
        assert {t.name.split("__")[1] for t in manager.tools()} == {"good"}
        status = {s["name"]: s for s in await manager.status()}
        assert status["good"]["status"] == "running" and status["hangs"]["status"] == "failed"
        assert status["refused"]["error"] and status["refused"]["tools"] == []


async def test_name_collisions_after_sanitizing_stay_unique() -> None:
    app_a, app_b = tool_server(), tool_server()
    configs = [McpServerConfig("my.srv"), McpServerConfig("my_srv")]
    apps = {"my.srv": app_a, "my_srv": app_b}
    async with McpManager(configs, transport=lambda c, _l: InMemoryTransport(apps[c.name])) as m:
        await m.start()
        names = [t.name for t in m.tools()]
        assert len(names) == 8 and len(set(names)) == 8
        assert all(NAME_RE.match(n) for n in names)


def test_manager_can_be_built_outside_an_event_loop() -> None:
    manager = McpManager({"x": McpServerConfig("x", command="true")})
    assert manager.tools() == []
    server = manager.servers["x"]
    assert isinstance(server, McpServer) and server.state == "stopped" and not server.alive


async def test_stop_while_starting_does_not_hang() -> None:
    entered = asyncio.Event()

    @asynccontextmanager
    async def slow(_cfg: McpServerConfig, _log: Any) -> AsyncIterator[Any]:
        entered.set()
        await anyio.sleep_forever()
        yield  # pragma: no cover

    manager = McpManager([McpServerConfig("slow", startup_timeout_s=300)], transport=slow)
    starting = asyncio.create_task(manager.start())
    await entered.wait()
    await manager.aclose()
    failures = await starting
    assert [(f.server, f.error) for f in failures] == [("slow", "stopped while starting")]
    assert (await manager.status())[0]["status"] == "stopped"
