"""``python -m local_ai_router`` is ``lar``."""

from .cli import main

main()
