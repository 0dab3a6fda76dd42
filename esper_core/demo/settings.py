"""Every setting of a demo run, validated in one place and recorded in ``report.json``.

Defaults depend on the topology (:data:`DEFAULTS`); the command line overrides any of
them. Nothing is defaulted silently: the resolved settings are printed at the start of a
run and written to the report, so a run can be repeated from its report alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from esper_core._extras import require_extras
from esper_core.control import STRATEGIES, ControllerConfig
from esper_core.errors import MissingExtraError
from esper_core.gates import POLICIES, QualityGates
from esper_core.registry import get_registry, list_blueprints

__all__ = [
    "CONTROLLER",
    "DEFAULTS",
    "MAX_BUDGET",
    "SIZES",
    "DemoSettings",
    "SettingsError",
    "known_blueprints",
]

#: The largest ``--budget`` (a fraction of the host's parameters): far beyond any useful seed budget.
MAX_BUDGET = 1000.0

#: ``default`` is what ``esper demo`` runs; ``tiny`` (hidden flag) is for the test suite.
SIZES = ("default", "tiny")

#: Per-topology defaults. Why these hosts and budgets: ``docs/evidence.md``.
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "cnn": {
        "epochs": 30,
        "seeds": 5,
        "budget": 0.5,
        "lr": 3e-3,
        "batch_size": 64,
        "exclude": ("noop",),
    },
    "transformer": {
        "epochs": 24,
        "seeds": 2,
        "budget": 0.5,
        "lr": 3e-3,
        "batch_size": 24,
        # flex_attention computes exactly what attention computes (another kernel; on CPU
        # training it even runs the same SDPA kernel), so it would only duplicate a family.
        "exclude": ("noop", "flex_attention"),
    },
}


#: The controller's timing thresholds (``ControllerConfig`` fields) per size. ``tiny`` germinates
#: at the first chance so a test of a few epochs sees a whole lifecycle.
CONTROLLER: Mapping[str, Mapping[str, Any]] = {
    "default": {
        "warmup_epochs": 3,
        "plateau_window": 2,
        "plateau_min_delta": 0.5,
        "ramp_epochs": 3,
        "prune_patience": 3,
    },
    "tiny": {
        "warmup_epochs": 1,
        "plateau_window": 1,
        "plateau_min_delta": 1e9,
        "ramp_epochs": 1,
        "prune_patience": 3,
    },
}


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the value and what is accepted."""


class OutputError(OSError):
    """The output folder cannot be created or written; the message names the path and why."""


def known_blueprints(topology: str) -> list[str]:
    """Names of the registered blueprints of ``topology``, sorted."""
    return sorted({spec.name for spec in list_blueprints(topology)})


def other_topology_hint(topology: str, names: list[str]) -> str:
    """What to say about ``names`` unknown in ``topology`` that another topology registers:
    ``"; 'lora' is a transformer blueprint (this run's topology is cnn): use --topology
    transformer to grow transformer blueprints"``, or ``""`` when no other topology has any."""
    registry = get_registry()
    found = {name: registry.topologies_of(name) for name in names}
    found = {name: where for name, where in found.items() if where}
    if not found:
        return ""
    each = ", ".join(f"{name!r} is a {' and '.join(where)} blueprint" for name, where in found.items())
    others = sorted({t for where in found.values() for t in where})
    if len(others) == 1:
        advice = f"use --topology {others[0]} to grow {others[0]} blueprints"
    else:
        advice = f"a run grows the blueprints of one --topology ({', '.join(others)})"
    return f"; {each} (this run's topology is {topology}): {advice}"


def _names(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class DemoSettings:
    """The resolved settings of one ``esper demo`` invocation.

    ``seeds`` are the random seeds run, one after another (each trains every model);
    ``budget`` is the controller's parameter budget as a fraction of the host's parameters,
    in ``(0, MAX_BUDGET]``;
    ``lr``/``seed_lr`` are AdamW learning rates of the host (and of both baselines) and of
    the seeds; ``batch_size`` is in samples (images, or text windows) per optimizer step.
    ``events``, ``events_csv`` and ``tensorboard`` are where the grown models' lifecycle
    events go (a JSON Lines file, a CSV file, a TensorBoard log folder; ``None``: nowhere),
    as given on the command line (relative paths are relative to the working directory).
    """

    topology: str
    epochs: int
    seeds: tuple[int, ...] = attrs.field(converter=tuple)
    strategies: tuple[str, ...] = attrs.field(converter=tuple)
    gate_policy: str = "strict"
    gate_thresholds: Mapping[str, float] = attrs.field(factory=dict, converter=dict)
    budget: float
    include: tuple[str, ...] | None = attrs.field(default=None, converter=_names)
    exclude: tuple[str, ...] = attrs.field(default=("noop",), converter=tuple)
    lr: float
    seed_lr: float
    batch_size: int
    threads: int | None = 1
    size: str = "default"
    events: str | None = None
    events_csv: str | None = None
    tensorboard: str | None = None

    def __attrs_post_init__(self) -> None:
        self.validate()

    @classmethod
    def resolve(cls, topology: str, **given: Any) -> DemoSettings:
        """Settings for ``topology``: ``given`` values (``None`` = not given) over :data:`DEFAULTS`."""
        if topology not in DEFAULTS:
            raise SettingsError(f"topology must be one of {sorted(DEFAULTS)}, got {topology!r}")
        base = dict(DEFAULTS[topology])
        first_seed = given.pop("first_seed", None)
        count = given.pop("seeds", None)
        values = {key: value for key, value in given.items() if value is not None}
        merged = {**base, **values}
        count = base["seeds"] if count is None else count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SettingsError(f"--seeds must be an integer >= 1, got {count!r}")
        first = 0 if first_seed is None else first_seed
        merged["seeds"] = tuple(range(first, first + count))
        merged.setdefault("strategies", (STRATEGIES[0],))
        merged.setdefault("seed_lr", merged["lr"])
        return cls(topology=topology, **merged)

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first bad value and what is accepted."""
        if self.topology not in DEFAULTS:
            raise SettingsError(f"topology must be one of {sorted(DEFAULTS)}, got {self.topology!r}")
        if self.size not in SIZES:
            raise SettingsError(f"size must be one of {list(SIZES)}, got {self.size!r}")
        _int_at_least("--epochs", self.epochs, 1)
        _int_at_least("--batch-size", self.batch_size, 1)
        if self.threads is not None:
            _int_at_least("--threads", self.threads, 1)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SettingsError(f"seeds must be distinct integers, got {list(self.seeds)}")
        for seed in self.seeds:
            _int_at_least("--seed", seed, 0)
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if not self.strategies or bad or len(set(self.strategies)) != len(self.strategies):
            raise SettingsError(
                f"--strategy must be distinct names from {list(STRATEGIES)}, got {','.join(self.strategies)!r}"
            )
        if self.gate_policy not in POLICIES:
            raise SettingsError(f"--gates must be one of {list(POLICIES)}, got {self.gate_policy!r}")
        try:
            self.gates()
        except Exception as exc:  # LifecycleError names the bad threshold and the accepted ones
            raise SettingsError(f"--gate-threshold: {exc}") from None
        # 0 would run a "grown" model that cannot grow; the cap keeps the budget in parameters
        # within what ControllerConfig accepts (2**53) for any host up to 9e12 parameters.
        _number_above("--budget", self.budget, MAX_BUDGET)
        _number_above("--lr", self.lr)
        _number_above("--seed-lr", self.seed_lr)
        known = known_blueprints(self.topology)
        for flag, names in (("--include", self.include or ()), ("--exclude", self.exclude)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise SettingsError(
                    f"{flag}: unknown {self.topology} blueprint(s) {unknown}; registered: {', '.join(known)}"
                    + other_topology_hint(self.topology, unknown)
                )
        self._validate_sinks()
        if self.include is not None and not set(self.include) - set(self.exclude):
            raise SettingsError(
                f"--include {','.join(self.include)} leaves no blueprint once --exclude "
                f"{','.join(self.exclude)} is applied"
            )
        if self.include is None and not set(known) - set(self.exclude):
            raise SettingsError(
                f"--exclude {','.join(self.exclude)} leaves no {self.topology} blueprint "
                f"(registered: {', '.join(known)})"
            )

    def _validate_sinks(self) -> None:
        paths = {"--events": self.events, "--events-csv": self.events_csv, "--tensorboard": self.tensorboard}
        for flag, path in paths.items():
            if path is not None and (not isinstance(path, str) or not path.strip()):
                raise SettingsError(f"{flag} must be a non-empty path, got {path!r}")
        if self.events is not None and self.events == self.events_csv:
            raise SettingsError(
                f"--events and --events-csv must be different files, both are {self.events!r}"
            )
        if self.tensorboard is not None:
            try:
                require_extras("--tensorboard", "tensorboard")
            except MissingExtraError as exc:
                raise SettingsError(str(exc)) from None

    def controller_config(self, host_params: int, strategy: str) -> ControllerConfig:
        """The grown model's controller: budget ``int(budget * host_params)``, this run's blueprints."""
        return ControllerConfig(
            param_budget=int(host_params * self.budget),
            include=self.include,
            exclude=self.exclude,
            strategy=strategy,
            **CONTROLLER[self.size],
        )

    def gates(self) -> QualityGates:
        """The quality gates every slot of the grown model uses."""
        return QualityGates(self.gate_policy, **self.gate_thresholds)

    def to_json(self) -> dict[str, Any]:
        """Every setting, with the gate thresholds in force (defaults included)."""
        gates = self.gates()
        return {
            "topology": self.topology,
            "epochs": self.epochs,
            "seeds": list(self.seeds),
            "strategies": list(self.strategies),
            "gates": {
                "policy": gates.policy,
                "overrides": dict(self.gate_thresholds),
                "thresholds": attrs.asdict(gates.thresholds),
            },
            "budget_fraction": self.budget,
            "controller": dict(CONTROLLER[self.size]),
            "include": None if self.include is None else list(self.include),
            "exclude": list(self.exclude),
            "lr": self.lr,
            "seed_lr": self.seed_lr,
            "batch_size": self.batch_size,
            "optimizer": "AdamW (torch defaults besides lr)",
            "threads": self.threads,
            "size": self.size,
            "event_sinks": {"jsonl": self.events, "csv": self.events_csv, "tensorboard": self.tensorboard},
        }


def _int_at_least(flag: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _number_above(flag: str, value: object, maximum: float = float("inf")) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    if not ok or value <= 0 or value == float("inf") or value > maximum:
        most = "" if maximum == float("inf") else f" and at most {maximum:g}"
        raise SettingsError(f"{flag} must be a finite number > 0{most}, got {value!r}")
