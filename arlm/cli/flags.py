"""``arlm train``'s model and training flags, generated from the family table: one flag per field with
``metadata["help"]`` of a family's config dataclass or training settings (``n_layer`` -> ``--n-layer``)."""

from __future__ import annotations

import argparse

import dataclasses

from ..errors import ArlmError
from ..models.registry import FAMILIES, default_of, family, trainable
from ..options import options

_TYPES = {"int": int, "float": float, "str": str}


def dest(f: dataclasses.Field) -> str:
    """The argparse dest of a field's flag: a bool that defaults to True is turned off by ``--no-NAME``
    (except an ``optional_bool``: ``--NAME`` / ``--no-NAME`` both set NAME)."""
    return f"no_{f.name}" if f.default is True and not f.metadata.get("optional_bool") else f.name


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _specs(only: str | None) -> dict[str, list]:
    """Option name -> [(family, field)] over the trainable families (or ``only``), in table order."""
    specs: dict[str, list] = {}
    for fam in [family(only)] if only else trainable():
        for name, f in options(fam).items():
            specs.setdefault(name, []).append((fam, f))
    return specs


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _help(pairs) -> str:
    f = pairs[0][1]
    text = " / ".join(dict.fromkeys(g.metadata["help"] for _, g in pairs))
    if isinstance(f.default, bool) and f.metadata.get("optional_bool"):  # --NAME / --no-NAME: say which holds
        values = {default_of(fam, g) for fam, g in pairs}
        return text if len(values) != 1 or "default" in text else f"{text} (default: {'on' if values.pop() else 'off'})"
    if f.type == "bool" or isinstance(f.default, bool):
        return text
    templated = "{defaults}" in text  # such a help says what its None default, "auto", chooses
    values = [(fam.name, "auto" if templated and default_of(fam, g) is None else _show(default_of(fam, g)))
              for fam, g in pairs]
    shown = values[0][1] if len({v for _, v in values}) == 1 else ", ".join(f"{n} {v}" for n, v in values)
    if templated:
        return text.replace("{defaults}", shown)
    return text if "default" in text else f"{text} (default: {shown})"


def add_family_flags(parser, only: str | None = None) -> None:
    """Register the flags of every trainable family (or of ``only``) on ``parser``, in groups by the
    families that use them. Every flag defaults to None: the family decides (see :func:`given`)."""
    groups: dict[tuple, object] = {}
    for name, pairs in _specs(only).items():
        f = pairs[0][1]
        fams = ("every model",) if f.metadata.get("any_model") else tuple(fam.name for fam, _ in pairs)
        if fams not in groups:
            groups[fams] = parser.add_argument_group(f"{', '.join(fams)} options" if fams[0] != "every model"
                                                     else "options of every model")
        g = groups[fams]
        if f.metadata.get("optional_bool"):  # --NAME / --no-NAME, None when neither is given
            g.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=_help(pairs))
            continue
        if isinstance(f.default, bool):
            g.add_argument(flag(dest(f)), dest=dest(f), action="store_true", default=None, help=_help(pairs))
            continue
        kind = f.metadata.get("flag_type") or _TYPES.get(str(f.type).split(" ")[0].split("[")[0], str)
        kw = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        g.add_argument(flag(name), dest=name, type=kind, default=None, help=_help(pairs), **kw)


def given(args, fam) -> dict:
    """The hyperparameters of family ``fam`` set on the command line (``--no-NAME`` -> ``NAME=False``)."""
    out = {}
    for name, f in options(fam).items():
        v = getattr(args, dest(f), None)
        if v is None:
            continue
        if isinstance(f.default, bool) and not f.metadata.get("optional_bool"):
            out[name] = not f.default
        else:
            out[name] = v
    return out


def check_apply(args) -> None:
    """Refuse a typed flag that the chosen model or vocab would ignore (one line naming it)."""
    typed = getattr(args, "given_flags", None) or set()
    fam = FAMILIES.get(args.model)
    mine = {dest(f) for f in options(fam).values()} if fam is not None and fam.trains else set()
    every = {dest(f) for _, pairs in _specs(None).items() for _, f in pairs}
    unused = sorted(flag(d) for d in typed & every if d not in mine)
    if unused and fam is not None:
        one = len(unused) == 1
        raise ArlmError(f"{', '.join(unused)} {'does' if one else 'do'} not apply to --model {args.model}: "
                        f"drop {'it' if one else 'them'}")
    if "vocab_size" in typed and args.vocab != "bpe":
        raise ArlmError(f"--vocab-size applies to --vocab bpe only, not --vocab {args.vocab}")
