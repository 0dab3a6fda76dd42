"""The blueprint specification a pack registers.

A :class:`BlueprintSpec` is everything the registry needs to know about one blueprint:
how to build it, how many parameters it has (exactly, without building it), and which
options it accepts. Validation lives here so every entry point (registry, CLI, slot,
conformance kit) rejects bad input the same way and before any factory runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from torch import nn

from esper_core.errors import OptionError, RegistryError
from esper_core.options import Option

__all__ = ["BlueprintSpec", "check_dim"]

_NAME_RE = r"^[a-z][a-z0-9_]*$"


def check_dim(dim: object) -> int:
    """Return ``dim`` if it is a positive int, else raise :class:`RegistryError`."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise RegistryError(f"dim must be a positive int; got {dim!r} ({type(dim).__name__})")
    return dim


def _unique_option_names(instance: BlueprintSpec, attribute: attrs.Attribute, value: tuple) -> None:
    names = [opt.name for opt in value]
    for opt in value:
        if not isinstance(opt, Option):
            raise RegistryError(f"blueprint {instance.name!r}: options must be Option, got {opt!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"blueprint {instance.name!r} declares option(s) twice: {duplicates}")


@attrs.frozen
class BlueprintSpec:
    """One named blueprint of one topology.

    ``factory(dim, **options)`` builds the module; ``param_count(dim, **options)`` returns
    its exact parameter count in closed form (rent must be exact and cheap); the optional
    ``flop_count(dim, input_shape, **options)`` returns the FLOPs of one forward pass.
    ``validate(dim, **options)``, when given, rejects combinations that single options
    cannot see (for example a head count that does not divide ``dim``) by raising
    :class:`~esper_core.errors.OptionError`.
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(_NAME_RE))
    topology: str = attrs.field(validator=attrs.validators.matches_re(_NAME_RE))
    factory: Callable[..., nn.Module] = attrs.field(validator=attrs.validators.is_callable())
    param_count: Callable[..., int] = attrs.field(validator=attrs.validators.is_callable())
    description: str = attrs.field(validator=attrs.validators.min_len(1))
    options: tuple[Option, ...] = attrs.field(default=(), converter=tuple, validator=_unique_option_names)
    flop_count: Callable[..., int] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.is_callable())
    )
    validate: Callable[..., None] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.is_callable())
    )

    @property
    def key(self) -> str:
        """The registry key, ``topology:name``."""
        return f"{self.topology}:{self.name}"

    def option(self, name: str) -> Option:
        """Return the declared option ``name`` or raise :class:`OptionError` listing them."""
        for opt in self.options:
            if opt.name == name:
                return opt
        raise OptionError(f"{self.key} has no option {name!r}; accepted options: {self._option_names()}")

    def defaults(self) -> dict[str, Any]:
        """The declared options with their default values."""
        return {opt.name: opt.default for opt in self.options}

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``options`` and fill in defaults; raise on unknown or invalid values."""
        unknown = sorted(set(options) - {opt.name for opt in self.options})
        if unknown:
            raise OptionError(
                f"{self.key} got unknown option(s) {unknown}; accepted options: {self._option_names()}"
            )
        return {opt.name: opt.validate(options.get(opt.name, opt.default)) for opt in self.options}

    def resolve(self, dim: object, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``dim`` and ``options`` together; return the resolved options."""
        check_dim(dim)
        resolved = self.resolve_options(options)
        if self.validate is not None:
            self.validate(dim, **resolved)
        return resolved

    def build(self, dim: int, **options: Any) -> nn.Module:
        """Build the module after validating everything the factory will receive."""
        resolved = self.resolve(dim, options)
        return self.factory(dim, **resolved)

    def count_params(self, dim: int, **options: Any) -> int:
        """The exact parameter count, validated, without building a module."""
        resolved = self.resolve(dim, options)
        return int(self.param_count(dim, **resolved))

    def count_flops(self, dim: int, input_shape: tuple[int, ...], **options: Any) -> int | None:
        """FLOPs of one forward pass on ``input_shape``, or ``None`` if not declared."""
        resolved = self.resolve(dim, options)
        if self.flop_count is None:
            return None
        return int(self.flop_count(dim, tuple(input_shape), **resolved))

    def _option_names(self) -> str:
        if not self.options:
            return "none"
        return ", ".join(f"{o.name} ({o.describe_accepted()}, default {o.default!r})" for o in self.options)
