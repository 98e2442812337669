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
