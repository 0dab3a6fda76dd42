"""Declared blueprint options.

A blueprint states every keyword it accepts as an :class:`Option`, so the registry can
validate a call before any factory or count runs, the CLI can list options with their
defaults, and an unknown or mistyped keyword is an error rather than a silent default.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from esper_core._checks import shown
from esper_core.errors import OptionError

__all__ = ["Option"]

_SUPPORTED_TYPES = (bool, int, float, str)


def _check_type(instance: Option, attribute: attrs.Attribute, value: type) -> None:
    if value not in _SUPPORTED_TYPES:
        names = ", ".join(t.__name__ for t in _SUPPORTED_TYPES)
        raise OptionError(f"option {instance.name!r}: type {value!r} is not one of {names}")


@attrs.frozen
class Option:
    """One keyword a blueprint accepts.

    ``choices`` restricts the value to a fixed set; ``minimum``/``maximum`` bound numbers
    (inclusive). The default must itself be valid, which is checked at construction so a
    broken declaration fails when the pack registers, not when a user first calls it.
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[a-z_][a-z0-9_]*$"))
    type: type = attrs.field(validator=_check_type)
    default: Any
    help: str = attrs.field(validator=attrs.validators.min_len(1))
    choices: tuple[Any, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    minimum: float | None = None
    maximum: float | None = None

    def __attrs_post_init__(self) -> None:
        self.validate(self.default)

    def describe_accepted(self) -> str:
        """Human-readable statement of what values this option accepts."""
        if self.choices is not None:
            return f"one of {list(self.choices)!r}"
        article = "an" if self.type is int else "a"
        text = f"{article} {self.type.__name__}"
        if self.minimum is not None and self.maximum is not None:
            return f"{text} in [{self.minimum}, {self.maximum}]"
        if self.minimum is not None:
            return f"{text} >= {self.minimum}"
        if self.maximum is not None:
            return f"{text} <= {self.maximum}"
        return text

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to the option's type, or raise :class:`OptionError`."""
        coerced = self._coerce(value)
        if self.choices is not None and coerced not in self.choices:
            self._reject(value)
        if self.minimum is not None and coerced < self.minimum:
            self._reject(value)
        if self.maximum is not None and coerced > self.maximum:
            self._reject(value)
        return coerced

    def _coerce(self, value: Any) -> Any:
        # bool is an int subclass: accepting True for an int option would hide a caller's bug.
        if self.type is bool:
            if isinstance(value, bool):
                return value
        elif self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif self.type is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:  # an int too large for a float (10**400)
                    number = math.inf
                if math.isfinite(number):
                    return number
        elif isinstance(value, str):
            return value
        self._reject(value)

    def _reject(self, value: Any) -> None:
        raise OptionError(
            f"option {self.name!r} got {shown(value)} ({type(value).__name__}); "
            f"accepted: {self.describe_accepted()}"
        )
