"""Entry point of the embedded model's subprocess: llama-cpp-python's server, one bug fixed.

``python -m local_ai_router.backends.llama_server ARGS`` takes exactly the flags
of ``python -m llama_cpp.server``. Before it starts, it turns off the HTML
autoescaping that llama-cpp-python (0.3.x) enables in its
``chatml-function-calling`` prompt template: with it on, every ``"`` ``'`` ``<``
``>`` and ``&`` of every message reaches the model as ``&#34;`` ``&#39;``
``&lt;``... Code, JSON and the model's own earlier actions arrive mangled, and a
small model copies the entities into its next tool call (measured: paths like
``calc.py&#39;: &#34;start_line`` that then grow until the reply is cut off).
Prompts are plain text, never HTML, so nothing is lost by not escaping them.

The patch lives only in this subprocess: importing this module changes nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["disable_prompt_html_escaping", "main"]


def disable_prompt_html_escaping() -> None:
    """Make llama_cpp's chat templates render message text verbatim (no autoescape)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp import llama_chat_format

    class VerbatimEnvironment(ImmutableSandboxedEnvironment):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["autoescape"] = False
            super().__init__(*args, **kwargs)

    # The handlers build their environment per call from this module-level name.
    llama_chat_format.ImmutableSandboxedEnvironment = VerbatimEnvironment  # type: ignore[misc]


def main() -> None:
    disable_prompt_html_escaping()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
