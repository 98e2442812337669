"""``arlm serve`` (the OpenAI-compatible HTTP server) and ``arlm heatmap`` (a text's surprisal, as a page)."""

from __future__ import annotations

from ..errors import ArlmError
from .common import adapt_settings, on_device, with_adapt


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
    v.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="read the API key from the first line of FILE (keep it readable only by you; default: none)")
    v.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health and the playground page / "
                        "(static, it asks for the key). A key on the command line is visible to every user of the "
                        "machine (ps); the environment variable ARLM_API_KEY or --api-key-file is safer "
                        "(default: ARLM_API_KEY if set, else no key needed)")
    v.add_argument("--max-tokens-limit", type=int, default=4096,
                   help="largest max_tokens a request may ask for (n x max_tokens is capped at 4x this)")
    v.set_defaults(func=run)


def _add_heatmap_parser(sub) -> None:
    h = sub.add_parser("heatmap", help="the surprisal heat map of a text: standalone HTML or a PNG",
                       description="Colour each token of a text by its probability given the text before it (red "
                                   "improbable to green probable, log scale from 1e-4 to 1), with the text's bits "
                                   "per char as caption: a standalone HTML page or a PNG.")
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
    serve(args.models, host=args.host, port=args.port, api_key=_api_key(args), max_tokens_limit=args.max_tokens_limit,
          device=args.device, adapt=adapt_settings(args))


def _cmd_heatmap(args) -> None:
    from ..corpus import read_text
    from ..lm import LM
    from ..serve.heatmap import write_heatmap

    lm = on_device(with_adapt(LM.load(args.model_dir), args), args)
    from ..checkpoint import refuse_model_files

    refuse_model_files(args.out, "--out")
    result = write_heatmap(lm, read_text(args.file), args.out)
    print(f"bits_per_char {result['bits_per_char']:.4f} over {result['n_chars']} chars -> {args.out}")


def _api_key(args) -> str | None:
    """The serve key: --api-key, --api-key-file or ARLM_API_KEY (in that order); None for none.

    Raises:
        ArlmError: both flags given, an unreadable or empty file, or a key a header cannot carry.
    """
    import os
    from pathlib import Path

    if args.api_key is not None and args.api_key_file is not None:
        raise ArlmError("give the key once: --api-key or --api-key-file, not both")
    if args.api_key is not None:
        key, where = args.api_key, "--api-key"
    elif args.api_key_file is not None:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ArlmError(f"cannot read --api-key-file {args.api_key_file}: {reason}") from None
        key, where = (lines[0].strip() if lines else ""), f"--api-key-file {args.api_key_file}"
    elif os.environ.get("ARLM_API_KEY") is not None:
        key, where = os.environ["ARLM_API_KEY"], "ARLM_API_KEY"
    else:
        return None
    if not key or not all("!" <= c <= "~" for c in key):
        raise ArlmError(f"the API key from {where} must be non-empty printable ASCII without spaces")
    return key
