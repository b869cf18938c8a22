"""web_fetch and the browser tools: real pages served on loopback, real headless Chromium.

The pages are a small Starlette app: a form whose greeting is rendered by JavaScript (so
only a real browser sees it), a second page behind a link, and a redirect to loopback.
Agent runs are scripted (ScriptedBackend) and go through the permission gate as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from conftest import run_events
from local_ai_router.agent.permissions import PermissionPolicy
from local_ai_router.agent.runner import RunRequest
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call
from local_ai_router.tools.browser import browser_available, chromium_path
from local_ai_router.tools.registry import ToolContext
from local_ai_router.tools.web import html_to_text, web_fetch
from local_ai_router.types import ToolError

HOME = """<html><head><title>Greeter</title><style>p{color:red}</style>
<script>function greet(){const n=document.getElementById('name').value;
document.getElementById('out').textContent='Hello, '+n+'!';}</script></head>
<body><h1>Greeter</h1><p>Type a name.</p>
<input id="name" name="name" placeholder="your name">
<button onclick="greet()">Greet</button><div id="out"></div>
<a href="/about">About us</a></body></html>"""
ABOUT = "<html><title>About</title><body><p>We build gateways.</p></body></html>"

needs_browser = pytest.mark.skipif(
    not browser_available() or chromium_path() is None,
    reason="needs the [browser] extra and a Chromium (scripts/setup.sh installs both)",
)


def site() -> Starlette:
    return Starlette(
        routes=[
            Route("/", lambda r: HTMLResponse(HOME)),
            Route("/about", lambda r: HTMLResponse(ABOUT)),
            Route("/plain", lambda r: PlainTextResponse("just text")),
            Route("/hop", lambda r: RedirectResponse("http://127.0.0.1:9/secret")),
        ]
    )


def call(name: str, **args: Any) -> Reply:
    return Reply(tool_calls=[tool_call(name, args)])


def results(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "tool_result"]


async def agent(make_settings, backend: ScriptedBackend, ws: Path, **agent_cfg: Any):
    return make_settings(
        backends=[backend.as_backend("b")],
        agent={"workspace": str(ws), "web_tools": True, **agent_cfg},
    )


def test_html_to_text_keeps_text_and_links_drops_scripts():
    title, text, links = html_to_text(HOME, "http://x.test/")
    assert title == "Greeter" and "Type a name." in text and "Greet" in text
    assert "function greet" not in text and "color:red" not in text
    assert links == ["http://x.test/about"]


async def test_web_fetch_reads_pages_and_refuses_private_addresses(served, tmp_path):
    url = await served(site())
    open_ctx = ToolContext(workspace=tmp_path, services={"web_allow_private": True})
    page = await web_fetch.fn(open_ctx, url + "/")
    assert "Title: Greeter" in page and "Type a name." in page and f"- {url}/about" in page
    assert "Hello," not in page  # no JavaScript here: that is what the browser is for
    assert "just text" in await web_fetch.fn(open_ctx, url + "/plain")

    guarded = ToolContext(workspace=tmp_path)
    with pytest.raises(ToolError, match=r"127\.0\.0\.1, a non-public address: refused"):
        await web_fetch.fn(guarded, url + "/")
    for bad in ("file:///etc/passwd", "ftp://x.test/", "http://169.254.169.254/latest"):
        with pytest.raises(ToolError):
            await web_fetch.fn(guarded, bad)


async def test_a_redirect_is_checked_again(served, tmp_path, monkeypatch):
    """A public page that redirects to loopback must not get through: each hop is checked."""
    import local_ai_router.tools.web as web

    url = await served(site())
    seen: list[str] = []

    async def only_the_first_hop_is_public(u: str, *, allow_private: bool) -> str:
        seen.append(u)
        if len(seen) > 1:
            raise ToolError(f"{u}: non-public address: refused")
        return u

    monkeypatch.setattr(web, "assert_public_url", only_the_first_hop_is_public)
    with pytest.raises(ToolError, match="non-public"):
        await web_fetch.fn(ToolContext(workspace=tmp_path), url + "/hop")
    assert seen == [url + "/hop", "http://127.0.0.1:9/secret"]


def test_webfetch_domain_rules(tmp_path):
    policy = PermissionPolicy(
        mode="auto",
        workspace=tmp_path,
        deny=["WebFetch(domain:evil.test)"],
        ask=["browser_click"],
    )
    decide = lambda tool, url: policy.evaluate(tool, {"url": url}).decision  # noqa: E731
    assert decide("web_fetch", "https://evil.test/x") == "deny"
    assert decide("browser_open", "http://a.b.evil.test:8080/") == "deny"
    assert decide("web_fetch", "https://notevil.test/") == "allow"
    assert decide("web_fetch", "https://evil.test.example.com/") == "allow"
    assert policy.evaluate("browser_click", {"target": "[1]"}).decision == "ask"
    plan = policy.with_mode("plan")
    assert plan.evaluate("web_fetch", {"url": "https://ok.test/"}).decision == "deny"


async def test_web_tools_are_opt_in(make_settings, tmp_path):
    rt = Runtime.create(make_settings(agent={"workspace": str(tmp_path)}))
    assert "web_fetch" not in rt.agent.tools_for(RunRequest(task="", workspace=tmp_path))
    rt = Runtime.create(make_settings(agent={"workspace": str(tmp_path), "web_tools": True}))
    offered = rt.agent.tools_for(RunRequest(task="", workspace=tmp_path)).names()
    assert "web_fetch" in offered
    assert ("browser_open" in offered) == browser_available()


@needs_browser
async def test_an_agent_fills_a_form_rendered_by_javascript(served, make_settings, tmp_path):
    url = await served(site())
    script = [
        call("browser_open", url=url + "/"),
        call("browser_type", target="your name", text="Ada"),
        call("browser_click", target="Greet"),
        call("browser_click", target="[3]"),  # the numbered link from the snapshot
        call("browser_click", target="No such button"),
        call("task_complete", answer="greeted"),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        settings = await agent(make_settings, backend, tmp_path, web_allow_private=True)
        events = await run_events(settings, RunRequest(task="greet Ada", workspace=tmp_path))
    opened, typed, clicked, followed, missing = results(events)[:5]
    assert opened["ok"] and "Title: Greeter" in opened["output"]
    assert '[1] input text "your name"' in opened["output"]
    assert '[2] button "Greet"' in opened["output"]
    assert '[3] a "About us" -> /about' in opened["output"]
    assert typed["ok"], typed["error"]
    assert clicked["ok"] and "Hello, Ada!" in clicked["output"], clicked
    assert followed["ok"] and "We build gateways." in followed["output"]
    assert not missing["ok"] and "nothing on the page matches 'No such button'" in missing["error"]
    assert events[-1]["status"] == "completed"


@needs_browser
async def test_the_browser_keeps_to_public_addresses_and_fails_cleanly(
    served, make_settings, tmp_path
):
    url = await served(site())
    script = [
        call("browser_click", target="Greet"),  # nothing open yet
        call("browser_open", url=url + "/"),  # loopback: refused by default
        call("browser_open", url="data:text/html,<p>local page</p><a href='x'>x</a>"),
        call("task_complete", answer="done"),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        settings = await agent(make_settings, backend, tmp_path)
        events = await run_events(settings, RunRequest(task="try", workspace=tmp_path))
    nothing_open, refused, data_url = results(events)[:3]
    assert not nothing_open["ok"] and "call browser_open first" in nothing_open["error"]
    assert not refused["ok"] and "non-public address: refused" in refused["error"]
    assert not data_url["ok"] and "only http:// and https://" in data_url["error"]
    assert events[-1]["status"] == "completed"
