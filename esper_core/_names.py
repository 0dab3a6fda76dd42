"""How error messages name a class: unambiguously, since many libraries reuse a class name.

PEFT's LoRA layer is ``peft.tuners.lora.layer.Linear``; a message calling it ``Linear``
beside ``torch.nn.Linear`` contradicts itself ("the layer there (Linear) is not an
nn.Linear"). Messages that name a user's or a library's module class use
:func:`class_name`.
"""

from __future__ import annotations

from torch import nn

__all__ = ["class_name"]


def class_name(value: object) -> str:
    """The class of ``value`` (``value`` itself when it is a class) as a message names it.

    ``torch.nn.Linear`` for a class that ``torch.nn`` exports under its own name, the bare
    name for a builtin (``int``), and ``module.qualname`` otherwise
    (``peft.tuners.lora.layer.Linear``, ``transformers.pytorch_utils.Conv1D``).
    """
    cls = value if isinstance(value, type) else type(value)
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
