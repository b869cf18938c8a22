"""A real browser for the agent: ``browser_open``, ``browser_click``, ``browser_type``.

Headless Chromium driven by Playwright (the ``[browser]`` extra; Chromium from the
system, ``/usr/bin/chromium`` or ``$LAR_CHROMIUM``, or Playwright's own download).
Pages run their JavaScript, so the agent can use what ``web_fetch`` cannot: forms,
client-rendered pages, buttons. One browser per run, started on first use and closed
with the run. Every request the page makes passes the same network guard as
``web_fetch`` (:func:`.web.assert_public_url`), redirects and sub-resources included.

Each tool answers with a snapshot: the URL, the title, the visible text (capped), and
the page's links, buttons and fields numbered ``[n]``; ``browser_click`` and
``browser_type`` take such a number, a visible text or a CSS selector.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from typing import Any

from ..types import ToolError
from .registry import ToolContext, tool, truncate
from .web import assert_public_url

__all__ = ["BrowserSession", "browser_available", "browser_tools", "chromium_path"]

SERVICE = "browser"
TIMEOUT_MS = 20_000
TEXT_CHARS = 6_000
LAUNCH_ARGS = [
    "--no-sandbox",  # as root (containers, CI) Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-background-networking",  # no calls home: they fail on closed networks
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Numbers the page's interactive elements and reads what the model needs to act on them.
SNAPSHOT_JS = """
() => {
  const items = [];
  const nodes = document.querySelectorAll(
    'a[href], button, input, textarea, select, [role=button], [onclick]');
  for (const el of nodes) {
    const box = el.getBoundingClientRect();
    if ((box.width === 0 && box.height === 0) || el.type === 'hidden') continue;
    const n = items.length + 1;
    el.setAttribute('data-lar-id', String(n));
    const tag = el.tagName.toLowerCase();
    const label = (el.innerText || el.value || el.getAttribute('aria-label') ||
      el.getAttribute('placeholder') || el.getAttribute('name') || '').trim().slice(0, 80);
    const kind = tag === 'input' ? `input ${el.type || 'text'}` : tag;
    const href = tag === 'a' ? ` -> ${el.getAttribute('href')}` : '';
    items.push(`[${n}] ${kind} ${JSON.stringify(label)}${href}`);
    if (items.length >= 80) break;
  }
  return {title: document.title, text: document.body ? document.body.innerText : '', items};
}
"""


def chromium_path() -> str | None:
    """A Chromium to drive: ``$LAR_CHROMIUM``, else one on PATH (None: Playwright's own)."""
    env = os.environ.get("LAR_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_available() -> bool:
    return importlib.util.find_spec("playwright") is not None


class BrowserSession:
    """One headless browser and page for one run."""

    def __init__(self, *, allow_private: bool):
        self.allow_private = allow_private
        self._pw: Any = None
        self._browser: Any = None
        self.page: Any = None
        self.blocked: list[str] = []

    async def start(self) -> Any:
        if self.page is not None:
            return self.page
        if not browser_available():
            raise ToolError(
                "the browser needs Playwright: pip install 'local-ai-router[browser]' "
                "and a Chromium (apt install chromium)"
            )
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        try:
            self._browser = await self._pw.chromium.launch(
                executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS
            )
        except Exception as exc:
            await self.aclose()
            raise ToolError(f"could not start Chromium: {str(exc).splitlines()[0]}") from None
        context = await self._browser.new_context(accept_downloads=False)
        await context.route("**/*", self._guard)
        self.page = await context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        return self.page

    async def _guard(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:", "about:")):
            await route.continue_()
            return
        try:
            await assert_public_url(url, allow_private=self.allow_private)
        except ToolError as exc:
            self.blocked.append(str(exc))
            await route.abort("blockedbyclient")
            return
        await route.continue_()

    async def snapshot(self, limit: int) -> str:
        page = self.page
        try:
            await page.wait_for_load_state("domcontentloaded")
            data = await page.evaluate(SNAPSHOT_JS)
        except Exception as exc:
            raise ToolError(f"could not read the page: {str(exc).splitlines()[0]}") from None
        text = truncate(str(data.get("text") or "").strip(), TEXT_CHARS)
        items = "\n".join(data.get("items") or []) or "(none)"
        out = f"URL: {page.url}\nTitle: {data.get('title') or ''}\n\n{text}\n\nElements:\n{items}"
        if self.blocked:
            out += "\n\nBlocked requests:\n" + "\n".join(self.blocked[-5:])
            self.blocked.clear()
        return truncate(out, limit)

    async def locator(self, target: str) -> Any:
        """``[n]``/``n`` from the last snapshot, a CSS selector (``#``, ``.``, ``[``), else
        by name: a button or link, a field's placeholder or label, then any visible text."""
        t = target.strip()
        if t.strip("[]").isdigit():
            return self.page.locator(f'[data-lar-id="{t.strip("[]")}"]').first
        if not t or t.startswith(("#", ".", "[")):
            return self.page.locator(t)
        page = self.page
        for candidate in (
            page.get_by_role("button", name=t),
            page.get_by_role("link", name=t),
            page.get_by_placeholder(t),
            page.get_by_label(t),
            page.get_by_text(t, exact=True),
            page.get_by_text(t),
        ):
            if await candidate.count():
                return candidate.first
        raise ToolError(f"nothing on the page matches {target!r}; use an [n] from the snapshot")

    async def aclose(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):  # already gone: nothing left to free
                await self._browser.close()
        if self._pw is not None:
            await self._pw.stop()
        self._browser = self._pw = self.page = None


def _session(ctx: ToolContext) -> BrowserSession:
    session = ctx.services.get(SERVICE)
    if session is None:
        session = BrowserSession(allow_private=bool(ctx.services.get("web_allow_private")))
        ctx.services[SERVICE] = session
    return session


async def _act(ctx: ToolContext, what: str, action: Any) -> str:
    session = _session(ctx)
    if session.page is None:
        raise ToolError("no page is open: call browser_open first")
    try:
        await action(session)
    except ToolError:
        raise
    except Exception as exc:  # Playwright's errors: a timeout, a missing element
        raise ToolError(f"{what} failed: {str(exc).splitlines()[0]}") from None
    return await session.snapshot(ctx.output_limit)


@tool(kind="other")
async def browser_open(ctx: ToolContext, url: str) -> str:
    """Open a URL in a headless browser (runs JavaScript); returns the page and its elements"""
    session = _session(ctx)
    await assert_public_url(url, allow_private=session.allow_private)
    page = await session.start()
    try:
        await page.goto(url, wait_until="domcontentloaded")
    except Exception as exc:
        raise ToolError(f"opening {url} failed: {str(exc).splitlines()[0]}") from None
    return await session.snapshot(ctx.output_limit)


@tool(kind="other")
async def browser_click(ctx: ToolContext, target: str) -> str:
    """Click an element of the open page: its [n], its visible text, or a CSS selector"""

    async def click(s: BrowserSession) -> None:
        await (await s.locator(target)).click()

    return await _act(ctx, f"clicking {target!r}", click)


@tool(kind="other")
async def browser_type(ctx: ToolContext, target: str, text: str, submit: bool = False) -> str:
    """Type into a field of the open page ([n], label text or CSS selector); submit presses Enter"""

    async def fill(s: BrowserSession) -> None:
        field = await s.locator(target)
        await field.fill(text)
        if submit:
            await field.press("Enter")

    return await _act(ctx, f"typing into {target!r}", fill)


def browser_tools() -> list[Any]:
    return [browser_open, browser_click, browser_type]
