"""The optional extras of ``esper-core`` and the one error for a feature whose extra is missing.

``import esper_core`` needs only torch, pluggy, attrs and numpy. A few features import more,
lazily, where they are used; each such module belongs to an extra of ``pyproject.toml``
(:data:`EXTRAS`). :func:`require_extras` imports them all up front and raises one
:class:`~esper_core.errors.MissingExtraError` naming every module that failed and the
``pip install`` command that brings them, instead of a ``ModuleNotFoundError`` traceback
from deep inside the feature. ``esper_core.hf`` takes the user's ``transformers`` classes as
arguments and imports nothing from the ``hf`` extra itself, so it needs no check.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from esper_core.errors import MissingExtraError

__all__ = ["EXTRAS", "install_command", "require_extras"]

#: Extra name -> the modules a feature imports from it, as ``(module, distribution)``: the
#: module that is imported and the distribution that provides it. ``torch.utils.tensorboard``
#: is imported (not ``tensorboard``) because torch refuses a tensorboard it cannot use.
EXTRAS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "demo": (("sklearn.datasets", "scikit-learn"), ("matplotlib", "matplotlib"), ("rich", "rich")),
    "tensorboard": (("torch.utils.tensorboard", "tensorboard"),),
}


def install_command(*extras: str) -> str:
    """``pip install "esper-core[a,b]"``: the command that installs ``extras``."""
    return f'pip install "esper-core[{",".join(extras)}]"'


def require_extras(feature: str, *extras: str) -> None:
    """Import every module of ``extras``; raise one :class:`MissingExtraError` if any fails.

    ``feature`` names what needs them in the message (``"esper demo"``, ``"--tensorboard"``,
    ``"TensorBoardSink"``). The message is one line: the feature, each extra with its
    distributions, each failed module with the import error, and :func:`install_command`
    for the extras that have a failure. Raises :class:`KeyError` for an extra not in
    :data:`EXTRAS` (a programming error, not user input).
    """
    failed: dict[str, list[str]] = {}
    modules: list[str] = []
    for extra in extras:
        for module, distribution in EXTRAS[extra]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                failed.setdefault(extra, []).append(f"{distribution} ({_reason(module, exc)})")
                modules.append(module)
    if not failed:
        return
    wanted = " and ".join(
        f"the {extra!r} extra ({', '.join(d for _, d in EXTRAS[extra])})" for extra in extras
    )
    missing = ", ".join(item for items in failed.values() for item in items)
    raise MissingExtraError(
        f"{feature} needs {wanted}: cannot import {missing}; install with: {install_command(*failed)}",
        extras=tuple(failed),
        modules=tuple(modules),
    )


def _reason(module: str, exc: ImportError) -> str:
    """What failed: ``No module named 'sklearn'``, or the error of an installed but broken module."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ModuleNotFoundError) else f"{module}: {text}"
