"""``arlm serve``: an OpenAI-compatible HTTP server for every model family.

Layout (as vLLM's OpenAI entrypoint): ``protocol.py`` is the wire format
(pydantic request models, response builders, the error shape), ``engine.py``
turns requests into model calls and batches concurrent requests, ``app.py``
holds the thin FastAPI routes, and ``static/`` the playground page (package data).
"""
