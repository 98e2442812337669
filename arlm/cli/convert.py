"""``arlm export``, ``import``, ``tokenize``, ``split``, ``compress``, ``decompress``: a model or a text
into another form."""

from __future__ import annotations

import math
import stat
import sys
from pathlib import Path

from ..errors import ArlmError
from .common import DOCUMENTS_HELP, adapt_settings, print_json, train_seed


CODING_THREADS_HELP = ("CPU threads for loading the model (default: OMP_NUM_THREADS if set, else the idle cores); "
                       "the coding itself runs on one thread, so that encoder and decoder compute identical "
                       "probabilities")


def add_parser(sub) -> None:
    _add_export_parser(sub)
    _add_import_parser(sub)
    _add_tokenize_parser(sub)
    _add_split(sub)
    _add_compress_parsers(sub)


def run(args) -> None:
    {"export": _cmd_export, "import": _cmd_import, "tokenize": _cmd_tokenize, "split": cmd_split,
     "compress": _cmd_compress, "decompress": _cmd_decompress}[args.command](args)


def _add_export_parser(sub) -> None:
    x = sub.add_parser("export", help="write a model in another tool's format: hf (transformers) or arpa (KenLM)")
    x.add_argument("model_dir", metavar="DIR", help="arlm model directory")
    x.add_argument("--format", required=True, choices=["hf", "arpa"],
                   help="hf: a transformers GPT2LMHeadModel directory (gpt family); "
                        "arpa: an ARPA back-off file (ngram family; gzip when OUT ends in .gz)")
    x.add_argument("--out", required=True, metavar="OUT", help="output directory (hf) or file (arpa)")
    x.add_argument("--json", action="store_true", help="print the result as JSON")
    x.set_defaults(func=run)


def _add_import_parser(sub) -> None:
    i = sub.add_parser("import", help="turn a transformers GPT-2 directory or an ARPA file into an arlm model directory")
    i.add_argument("source", metavar="SOURCE",
                   help="Hugging Face GPT-2 checkpoint directory with GPT-2's byte-level BPE tokenizer, or an ARPA file "
                        "(.arpa or .arpa.gz)")
    i.add_argument("--out", required=True, metavar="DIR", help="arlm model directory to write")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=run)


def _add_tokenize_parser(sub) -> None:
    k = sub.add_parser("tokenize", help="encode a text file into a token directory on disk (for corpora bigger than memory)")
    k.add_argument("data", metavar="DATA", help="UTF-8 text file to encode")
    k.add_argument("--out", required=True, help="token directory to write (tokens.bin, offsets.bin, tokens.json, vocab)")
    k.add_argument("--vocab", default=None, choices=["char", "byte", "bpe"],
                   help="vocabulary; char collects the characters in a first pass (default: char, or the vocab of --vocab-from)")
    k.add_argument("--vocab-from", default=None, metavar="DIR",
                   help="reuse the vocab of this model or token directory, needed for bpe (default: build one from DATA)")
    k.add_argument("--documents", default="file", choices=["lines", "file"],
                   help="lines: each non-empty line is a document; file: the whole file is one")
    k.add_argument("--chunk-size", default="4M", help="text read and encoded at a time (about 25 bytes of memory per byte)")
    k.add_argument("--json", action="store_true", help="print the header and the throughput as JSON")
    k.set_defaults(func=run)


def _add_split(sub) -> None:
    sp = sub.add_parser("split", help="write the train/val split that `arlm train` would make, as two files",
                        description="Write the train/val split that `arlm train` would make, as two files "
                                    "with the input file's permissions.")
    sp.add_argument("data", metavar="DATA", help="UTF-8 text file to split")
    sp.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    sp.add_argument("--val-fraction", type=float, default=0.1, help="share of DATA that goes to val")
    sp.add_argument("--seed", type=train_seed, default=1337, help="seed of the shuffle (lines mode; 0 .. 2**32-1)")
    sp.add_argument("--train-out", required=True, metavar="FILE", help="where to write the train part")
    sp.add_argument("--val-out", required=True, metavar="FILE", help="where to write the val part")
    sp.set_defaults(func=run)


def _add_compress_parsers(sub) -> None:
    z = sub.add_parser("compress", help="compress a text file losslessly with a model (range coding of its probabilities)")
    z.add_argument("model_dir", metavar="DIR", help="model directory")
    z.add_argument("input", metavar="IN", help="UTF-8 text file to compress (may be empty)")
    z.add_argument("output", metavar="OUT", help="compressed file to write")
    z.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the one the model was trained with)")
    z.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only on a terminal)")
    z.add_argument("--threads", type=int, default=None, help=CODING_THREADS_HELP)
    z.add_argument("--json", action="store_true", help="print the result as JSON")
    z.set_defaults(func=run)
    u = sub.add_parser("decompress", help="restore a file made by `arlm compress` (needs the same model)")
    u.add_argument("model_dir", metavar="DIR", help="model directory the file was compressed with")
    u.add_argument("input", metavar="IN", help="compressed file")
    u.add_argument("output", metavar="OUT", help="text file to write")
    u.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only on a terminal)")
    u.add_argument("--threads", type=int, default=None, help=CODING_THREADS_HELP)
    u.add_argument("--json", action="store_true", help="print the result as JSON")
    u.set_defaults(func=run)


def _cmd_export(args) -> None:
    from ..lm import LM

    lm = LM.load(args.model_dir)
    if args.format == "hf":
        from ..formats.hf import export_hf

        result = export_hf(lm, args.out)
    else:
        from ..formats.arpa import export_arpa
        from ..formats.hf import refuse_family
        from ..models.registry import FAMILIES

        if lm.model.family not in FAMILIES or "arpa" not in FAMILIES[lm.model.family].formats:
            raise refuse_family(lm.model.family, "arpa")
        from ..checkpoint import refuse_model_files

        refuse_model_files(args.out, "--out")
        result = export_arpa(lm.model, lm.vocab, args.out, documents=lm.documents)
    if args.json:
        print_json(result)
    else:
        print(f"{args.model_dir} -> {result['path']} ({args.format})")


def _cmd_import(args) -> None:
    from .. import checkpoint

    src = Path(args.source)
    replace = checkpoint.check_output_dir(args.out, args.force, inputs=[("SOURCE", src)])
    with checkpoint.new_model_dir(args.out, replace) as where:
        if src.is_dir():
            from ..formats.hf import import_hf

            lm = import_hf(src, where)
        else:
            from ..formats.arpa import import_arpa

            lm = import_arpa(src, where)
    result = {"model_dir": str(args.out), "family": lm.model.family, "vocab": lm.vocab.kind,
              "vocab_size": lm.vocab.vocab_size, "num_parameters": lm.model.num_parameters()}
    if args.json:
        print_json(result)
    else:
        print(f"{src} -> {args.out} ({result['family']}, {result['vocab']} vocab of {result['vocab_size']} tokens)")


def _cmd_tokenize(args) -> None:
    from ..models.ngram_count import parse_memory
    from ..tokens import tokenize

    from .. import checkpoint
    from ..data import TokenDir, is_token_dir

    out = Path(args.out)
    # a token directory of the same vocab kind and document mode is replaced whole by a rerun; anything else
    # (another vocab or mode, a model, other files) needs --force
    rerun = False
    if is_token_dir(out) and not args.force:
        old = TokenDir(out).header
        kind = args.vocab or ("char" if args.vocab_from is None else old["vocab"])
        if (old["vocab"], old["documents"]) != (kind, args.documents):
            raise ArlmError(f"--out {out} holds tokens of a {old['vocab']} vocab ({old['documents']} mode), not "
                            f"{kind} ({args.documents}): choose another --out, or --force to replace them")
        rerun = True
    replace = checkpoint.check_output_dir(out, args.force or rerun,
                                          inputs=[("DATA", args.data), ("--vocab-from", args.vocab_from)])
    with checkpoint.new_model_dir(out, replace) as where:
        r = tokenize(args.data, where, args.vocab, args.vocab_from, args.documents, parse_memory(args.chunk_size, "--chunk-size"),
                      progress=not args.json)
    if args.json:
        print_json(r)
        return
    print(f"tokenized {args.data}: {r['n_tokens']:,} tokens ({r['dtype']}, {r['vocab']} vocab of {r['vocab_size']}), "
          f"{r['n_documents']:,} document{'' if r['n_documents'] == 1 else 's'}, {r['n_bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s "
          f"({r['mb_per_s']:.1f} MB/s; encoding alone {r['encode_mb_per_s']:.1f} MB/s) -> {out}")


def cmd_split(args) -> None:
    from ..corpus import read_text, train_val_split
    from ..io import atomic_write_text

    from ..io import check_distinct_files

    check_distinct_files([("DATA", args.data)], [("--train-out", args.train_out), ("--val-out", args.val_out)])
    text = read_text(args.data)
    train, val = train_val_split(text, args.documents, args.val_fraction, args.seed)
    if args.documents == "file":
        train_text, val_text = train[0], (val[0] if val else "")
    else:
        train_text, val_text = "".join(d + "\n" for d in train), "".join(d + "\n" for d in val)
    for path in (args.train_out, args.val_out):
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from ..io import write_error

            raise write_error(path, e) from None
    mode = stat.S_IMODE(Path(args.data).stat().st_mode)  # the outputs are readable by whoever reads the input
    atomic_write_text(args.train_out, train_text, mode=mode)
    atomic_write_text(args.val_out, val_text, mode=mode)
    print(f"{args.train_out}: {len(train_text):,} characters; {args.val_out}: {len(val_text):,} characters")


def _cmd_compress(args) -> None:
    from ..coding import compress_file

    st = compress_file(args.model_dir, args.input, args.output, args.documents, progress=not args.no_progress and sys.stderr.isatty(),
                       device=args.device, adapt=adapt_settings(args))
    if args.json:
        print_json(st)
        return
    ideal = math.ceil(st["nll_bits"] / 8)
    print(f"{args.input}: {st['n_bytes']:,} bytes -> {args.output}: {st['compressed_bytes']:,} bytes "
          f"({st['bits_per_char']:.4f} bits/char; model -log2 p = {st['nll_bits']:.1f} bits = {ideal:,} bytes; "
          f"{st['n_bytes'] / 1024 / max(st['seconds'], 1e-9):.1f} KB/s)")


def _cmd_decompress(args) -> None:
    from ..coding import decompress_file

    st = decompress_file(args.model_dir, args.input, args.output, progress=not args.no_progress and sys.stderr.isatty(),
                       device=args.device)
    if args.json:
        print_json(st)
        return
    print(f"{args.input} -> {args.output}: {st['n_bytes']:,} bytes "
          f"({st['n_bytes'] / 1024 / max(st['seconds'], 1e-9):.1f} KB/s)")
