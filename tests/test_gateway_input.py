"""Bad input to the gateway: always a 4xx in OpenAI's error shape, never a 500 or a traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_ai_router.config import Settings
from local_ai_router.loopback import serve_app_in_thread
from local_ai_router.server import create_app
from local_ai_router.testing import ScriptedBackend

HI = [{"role": "user", "content": "hi"}]


def assert_error_shape(r: httpx2.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture
async def gw(served, make_settings) -> AsyncIterator[tuple[httpx2.AsyncClient, ScriptedBackend]]:
    async with ScriptedBackend(default="ok", models=["m"]) as b:
        settings = make_settings(
            backends=[{"name": "a", "url": b.url, "models": ["m"]}],
            server={"max_body_bytes": 4096},
        )
        url = await served(create_app(settings, with_agent=False))
        async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
            yield http, b


def with_field(**field: Any) -> bytes:
    """A valid body except for one field."""
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **field}).encode()


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("invalid json", b'{"messages": [', "invalid_json"),
    ("empty body", b"", "invalid_json"),
    ("whitespace body", b"  \n ", "invalid_json"),
    ("not utf-8", b'{"messages": "\xff\xfe"}', "invalid_json"),
    ("deeply nested", b"[" * 2000 + b"]" * 2000, "invalid_json"),
    ("array body", b"[1, 2]", "invalid_request"),
    ("string body", b'"hello"', "invalid_request"),
    ("null body", b"null", "invalid_request"),
    ("missing messages", b'{"model": "m"}', "invalid_request"),
    ("empty messages", b'{"messages": []}', "invalid_request"),
    ("messages a string", b'{"messages": "x"}', "invalid_request"),
    ("message not an object", b'{"messages": ["hi"]}', "invalid_request"),
    ("message without role", b'{"messages": [{"content": "hi"}]}', "invalid_request"),
    ("role not a string", b'{"messages": [{"role": 3, "content": "hi"}]}', "invalid_request"),
    ("max_tokens a string", with_field(max_tokens="a"), "invalid_request"),
    ("max_tokens numeric string", with_field(max_tokens="5"), "invalid_request"),
    ("max_tokens a bool", with_field(max_tokens=True), "invalid_request"),
    ("max_tokens negative", with_field(max_tokens=-1), "invalid_request"),
    ("max_completion_tokens float", with_field(max_completion_tokens=1.5), "invalid_request"),
    ("stream a string", with_field(stream="yes"), "invalid_request"),
    ("model a number", with_field(model=5), "invalid_request"),
    ("tools not a list", with_field(tools="x"), "invalid_request"),
    ("tool not an object", with_field(tools=[1]), "invalid_request"),
]


async def test_bad_bodies_are_400_in_openai_shape(gw):
    http, backend = gw
    wrong = []
    for name, body, code in BAD_BODIES:
        r = await http.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        try:
            assert_error_shape(r, 400, code)
        except (AssertionError, ValueError, KeyError) as exc:
            wrong.append(f"{name}: {r.status_code} {r.text[:200]} ({exc})")
    assert not wrong, "\n".join(wrong)
    assert backend.requests == []  # a malformed request never reaches a backend


async def test_error_message_names_the_field(gw):
    http, _ = gw
    r = await http.post("/v1/chat/completions", json={"messages": HI, "max_tokens": "a"})
    assert "max_tokens" in assert_error_shape(r, 400)["message"]
    r = await http.post("/v1/chat/completions", json={"messages": [{"content": "x"}]})
    assert "messages[0].role" in assert_error_shape(r, 400)["message"]


async def test_unknown_model_404_and_unknown_backend_400(gw):
    http, backend = gw
    r = await http.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
    err = assert_error_shape(r, 404, "model_not_found")
    assert "'nope'" in err["message"] and "m" in err["message"]
    r = await http.post(
        "/v1/chat/completions", json={"model": "m", "messages": HI}, headers={"X-Backend": "zzz"}
    )
    assert "unknown backend 'zzz'" in assert_error_shape(r, 400, "backend_not_found")["message"]
    assert backend.requests == []


async def test_oversized_body_is_413(gw):
    http, backend = gw
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    r = await http.post("/v1/chat/completions", json=big)
    assert_error_shape(r, 413, "body_too_large")

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted while read
        for _ in range(10):
            yield b"x" * 1000

    r = await http.post("/v1/chat/completions", content=chunked())
    assert_error_shape(r, 413, "body_too_large")
    assert backend.requests == []


async def test_unknown_route_and_wrong_method_same_shape(gw):
    http, _ = gw
    assert_error_shape(await http.get("/v1/nothing-here"), 404, "not_found")
    assert_error_shape(await http.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert_error_shape(await http.delete("/v1/models"), 405, "method_not_allowed")


async def test_openai_client_sees_typed_errors(gw):
    http, _ = gw
    client = openai.AsyncOpenAI(
        base_url=str(http.base_url).rstrip("/") + "/v1", api_key="x", max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=HI)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="m", messages=[])
    assert info.value.code == "invalid_request"


async def test_memory_bad_headers_are_400(gw):
    http, _ = gw
    body = {"model": "m", "messages": HI}
    r = await http.post("/v1/chat/completions", json=body, headers={"X-Enable-Memory": "true"})
    assert_error_shape(r, 400, "missing_user_id")
    r = await http.post(
        "/v1/chat/completions",
        json=body,
        headers={"X-Enable-Memory": "true", "X-User-ID": "u", "X-Conversation-ID": "a b\tc"},
    )
    assert_error_shape(r, 400, "invalid_conversation_id")


async def test_caller_chosen_model_name_cannot_break_headers(served, make_settings):
    # A backend without a model list (discovery failed) passes any name through; the name
    # echoes back in X-Model and must not break the response.
    async with ScriptedBackend(default="ok", models=["m"]) as b:
        b.healthy = False  # discovery at start fails: the backend's model list stays empty
        url = await served(
            create_app(make_settings(backends=[{"name": "a", "url": b.url}]), with_agent=False)
        )
        b.healthy = True
        async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
            body = {"model": "é\u2028x", "messages": HI}
            r = await http.post("/v1/chat/completions", json=body, headers={"X-Backend": "a"})
    assert r.status_code == 200, r.text
    assert r.headers["x-backend"] == "a" and r.headers["x-model"] == "??x"
    assert b.requests[0]["model"] == "é\u2028x"


# --------------------------------------------------------------------------- fuzz


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx2.Client]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "lar.db"
    backend = ScriptedBackend(default="ok", models=["m", "n"], record=False)
    with backend.run_in_thread() as b:
        settings = Settings.model_validate(
            {
                "storage": {"url": f"sqlite+aiosqlite:///{db}"},
                "health": {"interval_s": 3600},
                "server": {"request_log": False},
                "backends": [{"name": "a", "url": b.url, "models": ["m", "n"]}],
                "aliases": {"small": "m", "big": "n", "auto": "auto"},
            }
        )
        with (
            serve_app_in_thread(create_app(settings, with_agent=False)) as url,
            httpx2.Client(base_url=url, timeout=10) as client,
        ):
            yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
        "content": st.text(max_size=40) | json_values,
        "tool_calls": json_values,
        "name": json_values,
    },
)
chat_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "n", "auto", "small", "big", "a/m", "nope", ""])
        | json_values,
        "messages": st.lists(message, max_size=3) | json_values,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=10**6) | json_values,
        "tools": json_values,
        "temperature": json_values,
        "stream_options": json_values,
    },
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=chat_body | json_values)
def test_fuzzed_bodies_never_5xx(fuzz_client: httpx2.Client, body: Any) -> None:
    r = fuzz_client.post(
        "/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    if r.status_code in (502, 503):  # an upstream refusal is fine, in the error shape
        assert set(r.json()["error"]) == {"message", "type", "code"}
        return
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "code"}
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        assert r.json()["choices"][0]["message"]["content"] == "ok"
