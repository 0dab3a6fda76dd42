"""The tensor a slot sees in a module's output, and the output with that tensor replaced.

Many modules a user injects into do not return one tensor: a Hugging Face attention layer
returns ``(attn_output, attn_weights)``, a base model a ``ModelOutput`` (an ordered mapping
whose fields are also attributes), others a ``namedtuple`` or a ``dict``. An injection target
names the element its slot works on (:class:`~esper_core.inject.InjectionTarget` ``output``):

* ``None``: the output is the tensor itself;
* an ``int`` ``i``: element ``i`` of a tuple or list, or the ``i``-th field that is set
  (not ``None``) of a mapping, which is how ``ModelOutput`` indexes (``out[0]`` is
  ``last_hidden_state``);
* a ``str``: the key of a mapping, or the field of a ``namedtuple``.

:func:`replace_output` builds a new output of the same type (a tuple stays a tuple, a
``namedtuple`` the same ``namedtuple``, a ``ModelOutput`` the same class with the same
fields); the module's own output is never modified in place. Pure functions, so
``torch.compile`` traces them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from esper_core._checks import INT32_MAX, MAX_TEXT, shown
from esper_core.errors import HostError

__all__ = ["OutputKey", "check_output_key", "describe_output", "replace_output", "select_output"]

#: Which element of a module's output a slot sees: ``None`` (the output itself), an index or a key.
OutputKey = int | str | None


def check_output_key(key: object) -> OutputKey:
    """Return ``key`` if it is ``None``, an ``int >= 0`` or a non-empty ``str``, else raise :class:`HostError`."""
    if key is None or (isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= INT32_MAX):
        return key
    if isinstance(key, str) and 0 < len(key) <= MAX_TEXT:
        return key
    raise HostError(
        f"output must be None (the module returns one tensor), an int in [0, {INT32_MAX}] (a tuple "
        f"element, or the i-th set field of a ModelOutput) or a non-empty str of at most {MAX_TEXT} "
        f"characters (a key or field name); got {shown(key)}"
    )


def describe_output(out: Any, depth: int = 0) -> str:
    """A short description of an output's structure for messages: ``tuple(Tensor(2, 5, 32), None)``."""
    if isinstance(out, Tensor):
        return f"Tensor{tuple(out.shape)}" if not out.is_nested else "NestedTensor"
    if depth >= 2:
        return type(out).__name__
    if isinstance(out, Mapping):
        inner = ", ".join(f"{k}={describe_output(v, depth + 1)}" for k, v in list(out.items())[:8])
        return f"{type(out).__name__}({inner})"
    if isinstance(out, tuple | list):
        inner = ", ".join(describe_output(v, depth + 1) for v in list(out)[:8])
        return f"{type(out).__name__}({inner})"
    return "None" if out is None else type(out).__name__


def _mapping_key(out: Mapping[Any, Any], key: int | str) -> Any:
    if isinstance(key, str):
        if key not in out:
            raise KeyError(key)
        return key
    # ModelOutput's integer indexing skips fields that are None; a plain mapping has no None
    # fields to skip unless it holds them, and is indexed the same way for one rule.
    present = [k for k, v in out.items() if v is not None]
    return present[key]


def _tuple_index(out: tuple[Any, ...] | list[Any], key: int | str) -> int:
    if isinstance(key, str):
        fields = getattr(type(out), "_fields", None)
        if fields is None or key not in fields:
            raise KeyError(key)
        return list(fields).index(key)
    if key >= len(out):
        raise IndexError(key)
    return key


def select_output(out: Any, key: OutputKey, *, where: str) -> Tensor:
    """The tensor at ``key`` in ``out`` (``where`` names the module for messages).

    Raises :class:`HostError` naming ``where``, the key and the output's structure when the
    key is missing or its element is not a tensor.
    """
    if key is None:
        value = out
    else:
        try:
            if isinstance(out, Mapping):
                value = out[_mapping_key(out, key)]
            elif isinstance(out, tuple | list):
                value = out[_tuple_index(out, key)]
            else:
                raise TypeError
        except (KeyError, IndexError, TypeError):
            raise HostError(
                f"{where} returned {describe_output(out)}, which has no element output={key!r}; "
                "accepted: an index of a tuple/list, the i-th set field or a key of a mapping/ModelOutput, "
                "or a namedtuple field"
            ) from None
    if not isinstance(value, Tensor):
        hint = " (pass output=... to pick one of its tensors)" if key is None else ""
        raise HostError(
            f"{where} returned {describe_output(out)}; output={key!r} is {describe_output(value)}, "
            f"not a Tensor{hint}"
        )
    return value


def replace_output(out: Any, key: OutputKey, value: Tensor) -> Any:
    """``out`` with the element at ``key`` replaced by ``value``, as a new object of ``out``'s type.

    ``key`` must be valid for ``out`` (see :func:`select_output`, which checks it first).
    """
    if key is None:
        return value
    if isinstance(out, Mapping):
        items = dict(out)
        items[_mapping_key(out, key)] = value
        try:
            # dataclass-style mappings (ModelOutput) take their fields as keywords; dict and
            # OrderedDict accept the same call.
            return type(out)(**items)
        except TypeError:
            return type(out)(items)
    items_list = list(out)
    items_list[_tuple_index(out, key)] = value
    if isinstance(out, list):
        return type(out)(items_list)
    if type(out) is tuple:
        return tuple(items_list)
    if hasattr(type(out), "_fields"):  # a namedtuple takes its fields positionally
        return type(out)(*items_list)
    return type(out)(items_list)
