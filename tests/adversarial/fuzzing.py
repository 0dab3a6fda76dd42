"""A small, seeded, time-bounded fuzzing harness shared by the adversarial tests.

Every trial calls one entry point with some arguments replaced by bad values and classifies
the result:

* **rejected**: the library's own error (an :class:`~esper_core.errors.EsperError`) and the
  target exactly as before (``snapshot`` compares equal; tensors bit for bit, NaN included);
* **accepted**: no error, and the post-condition check of the entry point holds (the result
  is a working, consistent object: nothing silently defaulted or left half-valid);
* **failed**: anything else (an error that is not the library's, a state change on
  rejection, a message that floods the screen, a broken post-condition).

:class:`Tally` counts them; a test asserts ``failed == 0`` and reports the counts.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from esper_core.errors import EsperError

#: Longest acceptable error message: a huge bad value must be cut, not echoed.
MAX_MESSAGE = 4000


class _Odd(enum.Enum):
    """An enum that is none of the library's (a value of the wrong enum must be refused)."""

    ADD = "add"
    ONE = 1


def _unstringable() -> object:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("repr exploded")

        __str__ = __repr__

    return Unprintable()


#: (label, factory): each trial gets a fresh object (tensors and containers are mutable).
BAD_VALUES: tuple[tuple[str, Callable[[], object]], ...] = (
    ("None", lambda: None),
    ("True", lambda: True),
    ("False", lambda: False),
    ("0", lambda: 0),
    ("-1", lambda: -1),
    ("1", lambda: 1),
    ("2**31", lambda: 2**31),
    ("2**63", lambda: 2**63),
    ("10**400", lambda: 10**400),
    ("-10**400", lambda: -(10**400)),
    ("10**5000", lambda: 10**5000),  # repr() of it raises ValueError (int max str digits)
    ("0.5", lambda: 0.5),
    ("-0.0", lambda: -0.0),
    ("1e-300", lambda: 1e-300),
    ("1e308", lambda: 1e308),
    ("nan", lambda: math.nan),
    ("inf", lambda: math.inf),
    ("-inf", lambda: -math.inf),
    ("complex", lambda: complex(1, 1)),
    ("Decimal(1e400)", lambda: Decimal("1e400")),
    ("Fraction(1,3)", lambda: Fraction(1, 3)),
    ("empty str", lambda: ""),
    ("blank str", lambda: "   "),
    ("str 0.5", lambda: "0.5"),
    ("str no", lambda: "no"),
    ("huge str", lambda: "x" * 100_000),
    ("bytes", lambda: b"conv_light"),
    ("empty list", lambda: []),
    ("list", lambda: [1, 2]),
    ("tuple", lambda: (1,)),
    ("empty dict", lambda: {}),
    ("dict", lambda: {"a": 1}),
    ("dict int key", lambda: {1: 2}),
    ("set", lambda: {1}),
    ("object", lambda: object()),
    ("unprintable", _unstringable),
    ("function", lambda: lambda *a, **k: None),
    ("type", lambda: int),
    ("odd enum", lambda: _Odd.ADD),
    ("odd enum int", lambda: _Odd.ONE),
    ("np.float64 nan", lambda: np.float64("nan")),
    ("np.float32 0.5", lambda: np.float32(0.5)),
    ("np.int64 3", lambda: np.int64(3)),
    ("np.bool_", lambda: np.bool_(True)),
    ("np array 2", lambda: np.array([1.0, 2.0])),
    ("np array 0-d", lambda: np.array(3.0)),
    ("np array empty", lambda: np.array([])),
    ("tensor 0.5", lambda: torch.tensor(0.5)),
    ("tensor nan", lambda: torch.tensor(math.nan)),
    ("tensor 2", lambda: torch.tensor([1.0, 2.0])),
    ("tensor 2x3", lambda: torch.zeros(2, 3)),
    ("tensor int", lambda: torch.tensor(1)),
    ("tensor bool", lambda: torch.tensor(True)),
    ("tensor complex", lambda: torch.tensor(1 + 1j)),
    ("tensor meta", lambda: torch.empty(2, 8, 1, 1, device="meta")),
    ("tensor sparse", lambda: torch.zeros(2, 8).to_sparse()),
    ("tensor empty", lambda: torch.zeros(0)),
    ("tensor requires grad", lambda: torch.ones((), requires_grad=True)),
)


def bad_value(rng: random.Random) -> tuple[str, object]:
    label, make = rng.choice(BAD_VALUES)
    return label, make()


def same(a: object, b: object) -> bool:
    """Deep equality for snapshots: tensors bit for bit (NaN equal to NaN), containers by item."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device or a.layout != b.layout:
            return False
        if a.device.type == "meta":
            return True
        if a.is_floating_point():
            return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        return torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two snapshots differ (for a failure message)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys():
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if same(a, b) else [path or "<root>"]


@dataclass
class Entry:
    """One public entry point: how to build a fresh target, call it, and check both outcomes.

    ``params`` maps each fuzzed argument to a function giving a valid value for the target;
    ``call(target, kwargs)`` performs the call; ``snapshot(target)`` captures everything a
    rejected call must leave alone; ``check(target, result, kwargs)`` asserts the
    post-condition of an accepted call.
    """

    name: str
    make: Callable[[], Any]
    call: Callable[[Any, dict[str, Any]], Any]
    params: Mapping[str, Callable[[Any], Any]]
    snapshot: Callable[[Any], Any]
    check: Callable[[Any, Any, dict[str, Any]], None] = lambda target, result, kwargs: None


@dataclass
class Tally:
    """Counts of one fuzzer's trials."""

    name: str
    tried: int = 0
    rejected: int = 0
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    by_entry: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        return (
            f"{self.name}: tried {self.tried}, rejected {self.rejected}, accepted {self.accepted}, "
            f"failed {self.failed} over {len(self.by_entry)} entry points"
        )

    def report(self, limit: int = 15) -> str:
        shown = "\n".join(self.failures[:limit])
        more = f"\n... {self.failed - limit} more" if self.failed > limit else ""
        return f"{self.summary()}\n{shown}{more}"


def judge(
    tally: Tally,
    what: str,
    snapshot: Callable[[], Any],
    call: Callable[[], Any],
    check: Callable[[Any], None],
) -> None:
    """Run one trial and count it (see the module docstring for the classification)."""
    tally.tried += 1
    before = snapshot()
    rng_before = torch.get_rng_state()
    try:
        result = call()
    except EsperError as exc:
        message = _message(exc)
        after = snapshot()
        if not same(before, after):
            tally.failures.append(
                f"{what}: rejected ({message[:200]}) but changed {differences(before, after)[:5]}"
            )
        elif not torch.equal(rng_before, torch.get_rng_state()):
            tally.failures.append(f"{what}: rejected but moved the global RNG")
        elif len(message) > MAX_MESSAGE:
            tally.failures.append(f"{what}: error message of {len(message)} characters")
        else:
            tally.rejected += 1
        return
    except Exception as exc:  # anything else is a failure of the library's contract
        tally.failures.append(f"{what}: {type(exc).__name__}: {_message(exc)[:300]}")
        return
    try:
        check(result)
    except Exception as exc:  # the accepted call left something broken
        tally.failures.append(f"{what}: accepted, but {type(exc).__name__}: {_message(exc)[:300]}")
        return
    tally.accepted += 1


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as inner:  # a message that cannot even be formatted
        return f"<str() raised {type(inner).__name__}>"


def run(
    name: str,
    entries: Sequence[Entry],
    *,
    seed: int,
    trials: int,
    seconds: float,
    max_bad: int = 2,
) -> Tally:
    """``trials`` seeded trials over ``entries`` (stops early after ``seconds``)."""
    rng = random.Random(seed)
    tally = Tally(name)
    deadline = time.monotonic() + seconds
    for i in range(trials):
        if time.monotonic() > deadline:
            break
        entry = entries[i % len(entries)] if i < len(entries) else rng.choice(entries)
        target = entry.make()
        kwargs = {p: valid(target) for p, valid in entry.params.items()}
        bad = rng.sample(sorted(kwargs), k=min(len(kwargs), rng.randint(1, max_bad))) if kwargs else []
        labels = []
        for p in bad:
            label, kwargs[p] = bad_value(rng)
            labels.append(f"{p}={label}")
        what = f"{entry.name}({', '.join(labels)})"
        tally.by_entry[entry.name] = tally.by_entry.get(entry.name, 0) + 1
        judge(
            tally,
            what,
            lambda entry=entry, target=target: entry.snapshot(target),
            lambda entry=entry, target=target, kwargs=kwargs: entry.call(target, kwargs),
            lambda result, entry=entry, target=target, kwargs=kwargs: entry.check(target, result, kwargs),
        )
    return tally
