"""The blueprint specification a pack registers.

A :class:`BlueprintSpec` is everything the registry needs to know about one blueprint:
how to build it, how many parameters it has (exactly, without building it), and which
options it accepts. Validation lives here so every entry point (registry, CLI, slot,
conformance kit) rejects bad input the same way and before any factory runs.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from torch import nn

from esper_core._checks import check_mapping, shown
from esper_core.errors import BlueprintError, OptionError, RegistryError
from esper_core.options import Option

__all__ = ["BlueprintSpec", "check_dim", "count_problem"]

_NAME_RE = r"^[a-z][a-z0-9_]*$"


def check_dim(dim: object) -> int:
    """Return ``dim`` if it is a positive int, else raise :class:`RegistryError`."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise RegistryError(f"dim must be a positive int; got {dim!r} ({type(dim).__name__})")
    return dim


def count_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a parameter or FLOP count, or ``None`` if it is valid.

    A count is a non-negative integer: a Python ``int`` or another ``numbers.Integral``
    (numpy's integers), never a ``bool`` (``True`` would count as 1), a float (152.5 would be
    truncated, and 152.0 hides a formula that divides), NaN, a string or a tensor.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"returned {_describe(value)}; a count must be a non-negative int"
    if value < 0:
        return f"returned {int(value)}; a count must be a non-negative int"
    return None


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _raised(where: str, exc: BaseException) -> str:
    text = str(exc)
    return f"{where} raised {type(exc).__name__}" + (f": {text}" if text else "")


def _looks_like_allocation(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("alloc", "out of memory", "memory"))


#: Who registered a spec, as ``(distribution, version)``: set by :mod:`esper_core.registry`
#: when it is imported (a spec does not import the registry that holds it).
_origin_lookup: Callable[[BlueprintSpec], tuple[str, str] | None] | None = None


def set_origin_lookup(lookup: Callable[[BlueprintSpec], tuple[str, str] | None]) -> None:
    """Install the function that names the distribution a spec came from (the registry's)."""
    global _origin_lookup
    _origin_lookup = lookup


def _origin(spec: BlueprintSpec) -> str:
    """Which distribution registered ``spec``, looked up without loading any plugin."""
    found = None if _origin_lookup is None else _origin_lookup(spec)
    return "" if found is None else f" (registered by {found[0]} {found[1]})"


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

    ``position_wise`` matters for topologies with a sequence axis: ``True`` when the seed's
    output at each position depends only on its input at that position (a position-wise
    module in the Transformer paper's sense: a norm, an MLP, LoRA), so a decoder that feeds
    one new token at a time with a KV cache runs it unchanged; ``False`` when it mixes
    positions (attention), so cached decoding would give it only the new tokens. ``None``
    (not declared) counts as ``False``: such seeds refuse cached decoding
    (:mod:`esper_core._decoding`) rather than silently change its results.
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
    position_wise: bool | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(bool)), kw_only=True
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
        """Validate ``options`` and fill in defaults; raise on unknown or invalid values.

        Raises :class:`OptionError` naming this blueprint (``topology:name``), the option,
        the value and what is accepted.
        """
        options = check_mapping(f"the options of {self.key}", options, error=OptionError)
        unknown = sorted(set(options) - {opt.name for opt in self.options})
        if unknown:
            raise OptionError(
                f"{self.key} got unknown option(s) {shown(unknown, 200)}; accepted options: {self._option_names()}"
            )
        resolved = {}
        for opt in self.options:
            try:
                resolved[opt.name] = opt.validate(options.get(opt.name, opt.default))
            except OptionError as exc:
                raise self._named(exc) from None
        return resolved

    def resolve(self, dim: object, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``dim`` and ``options`` together; return the resolved options.

        Raises :class:`RegistryError` for a bad ``dim``, :class:`OptionError` for a rejected
        option or combination, and :class:`BlueprintError` when the pack's ``validate``
        raises anything else (a bug in the pack, not a rejection).
        """
        check_dim(dim)
        resolved = self.resolve_options(options)
        if self.validate is not None:
            try:
                self.validate(dim, **resolved)
            except OptionError as exc:
                raise self._named(exc) from None
            except Exception as exc:  # a pack's validate() may fail in any way
                raise self._fault("could not validate", dim, resolved, _raised("validate()", exc)) from exc
        return resolved

    def build(self, dim: int, **options: Any) -> nn.Module:
        """Build the module after validating everything the factory will receive.

        Raises :class:`OptionError` for rejected options and :class:`BlueprintError` when the
        factory raises (including ``MemoryError`` and allocator ``RuntimeError``s) or returns
        something that is not an ``nn.Module``; the message names the blueprint, dim,
        options and the distribution that registered it.
        """
        resolved = self.resolve(dim, options)
        try:
            module = self.factory(dim, **resolved)
        except OptionError as exc:
            raise self._named(exc) from None
        except MemoryError as exc:
            detail = f"{_raised('the factory', exc)} (out of memory{self._size_hint(dim, resolved)})"
            raise self._fault("failed to build", dim, resolved, detail) from None
        except Exception as exc:  # a pack's factory may fail in any way; name it, keep the cause
            detail = _raised("the factory", exc) + self._size_hint(dim, resolved, allocator=exc)
            raise self._fault("failed to build", dim, resolved, detail) from exc
        if not isinstance(module, nn.Module):
            detail = f"the factory returned {_describe(module)}, not an nn.Module"
            raise self._fault("failed to build", dim, resolved, detail)
        return module

    def count_params(self, dim: int, **options: Any) -> int:
        """The exact parameter count, validated, without building a module.

        Raises :class:`BlueprintError` if the pack's ``param_count`` raises or returns
        anything but a non-negative ``int`` (a ``bool``, a float, NaN, a string, a negative
        number), naming the blueprint, dim, options and distribution.
        """
        resolved = self.resolve(dim, options)
        return self._count("param_count", self.param_count, dim, resolved, (dim,))

    def count_flops(self, dim: int, input_shape: tuple[int, ...], **options: Any) -> int | None:
        """FLOPs of one forward pass on ``input_shape``, or ``None`` if not declared.

        Checked like :meth:`count_params`.
        """
        resolved = self.resolve(dim, options)
        if self.flop_count is None:
            return None
        return self._count("flop_count", self.flop_count, dim, resolved, (dim, tuple(input_shape)))

    def _count(
        self, what: str, function: Callable[..., Any], dim: int, resolved: dict[str, Any], args: tuple
    ) -> int:
        try:
            value = function(*args, **resolved)
        except OptionError as exc:  # a declared rejection made inside the count: still a rejection
            raise self._named(exc) from None
        except Exception as exc:  # a pack's count may fail in any way
            raise self._fault(f"has a broken {what}", dim, resolved, _raised(f"{what}()", exc)) from exc
        problem = count_problem(value)
        if problem is not None:
            raise self._fault(f"has a broken {what}", dim, resolved, f"{what}() {problem}")
        return int(value)

    def _named(self, exc: OptionError) -> OptionError:
        """``exc`` with this blueprint's ``topology:name`` in front, unless it names it already."""
        message = str(exc)
        return exc if self.key in message else OptionError(f"{self.key}: {message}")

    def _fault(self, action: str, dim: object, options: Mapping[str, Any], detail: str) -> BlueprintError:
        return BlueprintError(
            f"blueprint {self.key}{_origin(self)} {action} at dim={dim!r} with options "
            f"{dict(options)!r}: {detail}"
        )

    def _size_hint(self, dim: int, resolved: dict[str, Any], allocator: BaseException | None = None) -> str:
        """For an allocation failure: what the closed-form count says the module would hold."""
        if allocator is not None and not _looks_like_allocation(allocator):
            return ""
        try:
            count = self._count("param_count", self.param_count, dim, resolved, (dim,))
        except Exception:  # the hint is best effort; the build failure is what is reported
            return ""
        return f"; param_count() says {count:,} parameters ({count * 4 / 2**30:.3g} GiB as float32)"

    def _option_names(self) -> str:
        if not self.options:
            return "none"
        return ", ".join(f"{o.name} ({o.describe_accepted()}, default {o.default!r})" for o in self.options)
