"""``web_fetch``: a web page as text, and the network guard the browser shares.

Opt-in (``agent.web_tools: true``): each web tool costs prompt tokens, and the web is
where a model's requests leave the machine. Addresses on loopback, private, link-local
and other non-public networks are refused unless ``agent.web_allow_private`` is set:
the gateway's own agent API listens on loopback without a key, and a model that could
browse to it (or to a router's admin page, or a cloud metadata endpoint) would be
outside every other guard. Each redirect is checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx2

from ..types import ToolError
from .registry import ToolContext, tool, truncate

__all__ = ["assert_public_url", "html_to_text", "web_fetch"]

MAX_REDIRECTS = 5
MAX_BYTES = 5_000_000
USER_AGENT = "local-ai-router/0.1 (agent web_fetch)"


async def assert_public_url(url: str, *, allow_private: bool) -> str:
    """``url`` if it is http(s) and its host resolves only to public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"only http:// and https:// URLs can be fetched, not {url[:200]!r}")
    if allow_private:
        return url
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise ToolError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise ToolError(
                f"{host} resolves to {address}, a non-public address: refused "
                "(set agent.web_allow_private to reach local services)"
            )
    return url


class _TextExtractor(HTMLParser):
    """Readable text from HTML: no scripts or styles, block elements on their own lines."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
         "article", "header", "footer", "pre", "blockquote", "table", "ul", "ol", "form"}
    )  # fmt: skip

    def __init__(self, base: str):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.parts: list[str] = []
        self.links: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n")
        href = dict(attrs).get("href") if tag == "a" else None
        if href and not href.startswith(("javascript:", "#")) and len(self.links) < 50:
            self.links.append(urljoin(self.base, href))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str, base: str = "") -> tuple[str, str, list[str]]:
    """(title, text, links) of an HTML document."""
    parser = _TextExtractor(base)
    parser.feed(html)
    parser.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.parts))
    text = re.sub(r"\n\s*\n+", "\n\n", "\n".join(line.strip() for line in text.split("\n")))
    return parser.title.strip(), text.strip(), parser.links


async def _get(url: str, allow_private: bool) -> httpx2.Response:
    async with httpx2.AsyncClient(
        timeout=20.0, follow_redirects=False, headers={"user-agent": USER_AGENT}
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await assert_public_url(url, allow_private=allow_private)
            try:
                response = await client.get(url)
            except httpx2.HTTPError as exc:
                raise ToolError(f"fetching {url} failed: {exc or type(exc).__name__}") from None
            if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            return response
    raise ToolError(f"more than {MAX_REDIRECTS} redirects from {url}")


@tool(read_only=True, kind="other")
async def web_fetch(ctx: ToolContext, url: str) -> str:
    """Fetch a web page (no JavaScript) and return its title, text and links"""
    allow_private = bool(ctx.services.get("web_allow_private"))
    response = await _get(url, allow_private)
    final = str(response.url)
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body = response.content[:MAX_BYTES]
    head = f"URL: {final}\nStatus: {response.status_code}\n"
    if kind in ("text/html", "application/xhtml+xml"):
        title, text, links = html_to_text(
            body.decode(response.encoding or "utf-8", "replace"), final
        )
        listed = "\n".join(f"- {link}" for link in links[:30])
        out = f"{head}Title: {title}\n\n{text}" + (f"\n\nLinks:\n{listed}" if listed else "")
    elif kind.startswith("text/") or kind in ("application/json", "application/xml", ""):
        out = head + "\n" + body.decode(response.encoding or "utf-8", "replace")
    else:
        out = f"{head}Content: {kind or 'unknown type'}, {len(response.content)} bytes (not text)"
    return truncate(out, ctx.output_limit)
