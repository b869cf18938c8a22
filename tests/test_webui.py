"""The web UI at /ui, driven in headless Chromium with Playwright against a served gateway.

Chat goes through the real /v1/chat/completions stream to a ScriptedBackend; an agent run
goes through /agent/run over SSE with a permission request answered by clicking Allow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from local_ai_router.server import create_app
from local_ai_router.testing import Reply, ScriptedBackend, tool_call
from local_ai_router.tools.browser import LAUNCH_ARGS, browser_available, chromium_path

pytestmark = pytest.mark.skipif(
    not browser_available() or chromium_path() is None,
    reason="needs the [browser] extra and a Chromium (scripts/setup.sh installs both)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield b
        finally:
            await b.close()


async def open_ui(browser: Any, url: str) -> Any:
    # The page's CSP forbids eval, which Playwright's wait_for_function uses; the test
    # lifts it (the XSS check below does not depend on it: text is never parsed as HTML).
    page = await browser.new_page(bypass_csp=True)
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(url + "/")  # redirects to /ui
    return page


async def test_the_page_is_served_with_a_strict_policy(served, make_settings):
    url = await served(create_app(make_settings()))
    async with httpx2.AsyncClient(base_url=url) as http:
        r = await http.get("/ui")
        root = await http.get("/")
    assert r.status_code == 200 and "local-ai-router" in r.text
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert root.status_code in (302, 307) and root.headers["location"] == "/ui"


async def test_chat_streams_a_reply_and_shows_untrusted_text_as_text(
    served, make_settings, browser
):
    script = ["Hello from the script", '<img src=x onerror="window.pwned=1"> as text']
    async with ScriptedBackend(script, models=["m1", "m2"]) as backend:
        url = await served(create_app(make_settings(backends=[backend.as_backend("gpu")])))
        page = await open_ui(browser, url)
        await page.wait_for_selector("#model option[value=m2]", state="attached")
        await page.select_option("#model", "m2")
        await page.fill("#chat-input", "hi there")
        await page.click("#chat-send")
        await page.wait_for_function(
            "document.getElementById('chat-log').innerText.includes('Hello from the script')"
        )
        assert "via gpu / m2" in await page.inner_text("#chat-status")
        await page.fill("#chat-input", "and again")
        await page.press("#chat-input", "Enter")
        await page.wait_for_function(
            "document.getElementById('chat-log').innerText.includes('as text')"
        )
        assert await page.locator("#chat-log img").count() == 0
        assert await page.evaluate("window.pwned") is None
        second = backend.requests[1]
        assert second["model"] == "m2" and second["stream"] is True
        assert [m["content"] for m in second["messages"]] == [
            "hi there",
            "Hello from the script",
            "and again",
        ]
        assert page.errors == []


async def test_an_agent_run_with_an_approval_clicked_in_the_page(
    served, make_settings, browser, tmp_path: Path
):
    script = [
        Reply(tool_calls=[tool_call("write_file", {"path": "hello.txt", "content": "hi"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "wrote hello.txt"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        settings = make_settings(
            backends=[backend.as_backend("gpu")], agent={"workspace": str(tmp_path)}
        )
        url = await served(create_app(settings))
        page = await open_ui(browser, url)
        await page.click("#tab-agent")
        await page.fill("#task", "write a greeting file")
        await page.select_option("#mode", "ask")
        await page.click("#run")
        await page.click("#events .ask button:text('Allow')")
        await page.wait_for_function(
            "document.getElementById('events').innerText.includes('completed: wrote hello.txt')"
        )
        assert (tmp_path / "hello.txt").read_text() == "hi"
        await page.wait_for_function("document.getElementById('runs').rows.length > 0")
        assert "write a greeting file" in await page.inner_text("#runs")
        assert page.errors == []


async def test_a_server_with_keys_needs_one_in_the_page(served, make_settings, browser):
    async with ScriptedBackend(["keyed reply"], models=["m"]) as backend:
        settings = make_settings(
            backends=[backend.as_backend("gpu")], server={"require_api_key": True}
        )
        app = create_app(settings)
        url = await served(app)
        _, key = await app.state.lar.keys.create("ui", ["chat", "agent"])
        page = await open_ui(browser, url)
        await page.wait_for_function(
            "document.getElementById('chat-log').innerText.includes('missing API key')"
        )
        await page.fill("#api-key", key)
        await page.dispatch_event("#api-key", "change")
        await page.wait_for_selector("#model option[value=m]", state="attached")
        await page.fill("#chat-input", "hello")
        await page.click("#chat-send")
        await page.wait_for_function(
            "document.getElementById('chat-log').innerText.includes('keyed reply')"
        )


async def test_the_page_works_under_its_own_csp(served, make_settings, browser):
    """Without the test's CSP bypass: the inline script runs and may call this server."""
    async with ScriptedBackend(["x"], models=["csp-model"]) as backend:
        url = await served(create_app(make_settings(backends=[backend.as_backend("gpu")])))
        page = await browser.new_page()
        violations: list[str] = []
        page.on(
            "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
        )
        await page.goto(url + "/ui")
        await page.locator("#model option[value=csp-model]").wait_for(state="attached")
        await page.locator("#health").filter(has_text="1/1 backends up").wait_for()
        assert violations == []
