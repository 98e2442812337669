"""A trainable family's options, as ``arlm.train`` takes them and ``arlm train`` lists them: the
hyperparameters of its config dataclass, then the settings of how it trains (``arlm.training.settings``).
"""

from __future__ import annotations

import dataclasses

from .errors import ArlmError
from .models.registry import Family, hyperparameters, trainable
from .training.settings import CountSettings, TrainSettings

#: The settings dataclass of each way of training that has options.
SETTINGS = {"gradient": TrainSettings, "count": CountSettings}


def options(fam: Family) -> dict[str, dataclasses.Field]:
    """What ``arlm.train`` takes for ``fam`` beyond the data: its config's hyperparameters, then its
    training procedure's settings (a config field wins over a setting of the same name), then the
    training loop's settings marked ``any_model`` (accepted, unused, by every family)."""
    out = {f.name: f for f in hyperparameters(fam.config_class())}
    cls = SETTINGS.get(fam.trains)
    for f in hyperparameters(cls) if cls is not None else ():
        out.setdefault(f.name, f)
    for f in hyperparameters(TrainSettings):
        if f.metadata.get("any_model"):
            out.setdefault(f.name, f)
    return out


def check_options(fam: Family, given, spell=str) -> None:
    """Refuse names in ``given`` that are not options of ``fam``; ``spell`` turns a name into what the
    user typed (``--n-layer`` on the command line).

    Raises:
        ArlmError: one line naming each unknown or inapplicable option.
    """
    mine = options(fam)
    known = {n for f in trainable() for n in options(f)}
    unknown = sorted(spell(n) for n in given if n not in known)
    if unknown:
        raise ArlmError(f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                        f"{fam.name} takes {', '.join(map(spell, mine))}")
    unused = sorted(spell(n) for n in given if n not in mine)
    if unused:
        one = len(unused) == 1
        raise ArlmError(f"{', '.join(unused)} {'does' if one else 'do'} not apply to --model {fam.name}: "
                        f"drop {'it' if one else 'them'}")
    for n, v in given.items():
        kinds = _accepted(mine[n])
        if v is not None and kinds and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
            names = " or ".join(k.__name__ for k in kinds)
            raise ArlmError(f"{spell(n)} must be {'an' if names[0] in 'ai' else 'a'} {names}, got {v!r}")


#: The Python types an option of each annotated type takes (an int where a float goes; a list as its flag
#: spells it, "0,1,2").
_KINDS = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,), "list": (list, tuple, str)}


def _accepted(f: dataclasses.Field) -> tuple[type, ...]:
    """The types ``f`` takes from ``arlm.train``: its annotation's, plus its flag's (a duration may be a str)."""
    kinds = _KINDS.get(str(f.type).split(" ")[0].split("[")[0], ())
    extra = f.metadata.get("flag_type")
    return kinds + ((extra,) if kinds and extra and extra not in kinds else ())
