"""``arlm serve`` (the OpenAI-compatible HTTP server) and ``arlm heatmap`` (a text's surprisal, as a page)."""

from __future__ import annotations

from ..errors import ArlmError
from .common import on_device


def add_parser(sub) -> None:
    _add_serve_parser(sub)
    _add_heatmap_parser(sub)


def run(args) -> None:
    {"serve": _cmd_serve, "heatmap": _cmd_heatmap}[args.command](args)


def _add_serve_parser(sub) -> None:
    v = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API, with a playground page at /")
    v.add_argument("models", nargs="+", metavar="DIR",
                   help="model directory to serve (its id is the directory name), or NAME=DIR")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (only this machine by default)")
    v.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    v.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health (default: no key needed)")
    v.add_argument("--max-tokens-limit", type=int, default=4096,
                   help="largest max_tokens a request may ask for (n x max_tokens is capped at 4x this)")
    v.set_defaults(func=run)


def _add_heatmap_parser(sub) -> None:
    h = sub.add_parser("heatmap", help="the surprisal heat map of a text: standalone HTML or a PNG")
    h.add_argument("model_dir", metavar="DIR", help="model directory")
    h.add_argument("file", metavar="FILE", help="UTF-8 text file to score")
    h.add_argument("--out", required=True, help="output file: .html (standalone page) or .png (matplotlib)")
    h.set_defaults(func=run)


def _cmd_serve(args) -> None:
    from ..serve.app import serve

    if not 0 <= args.port <= 65535:
        raise ArlmError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_tokens_limit < 1:
        raise ArlmError(f"--max-tokens-limit must be >= 1, got {args.max_tokens_limit}")
    serve(args.models, host=args.host, port=args.port, api_key=args.api_key, max_tokens_limit=args.max_tokens_limit,
          device=args.device)


def _cmd_heatmap(args) -> None:
    from ..corpus import read_text
    from ..lm import LM
    from ..serve.heatmap import write_heatmap

    lm = on_device(LM.load(args.model_dir), args)
    result = write_heatmap(lm, read_text(args.file), args.out)
    print(f"bits_per_char {result['bits_per_char']:.4f} over {result['n_chars']} chars -> {args.out}")
