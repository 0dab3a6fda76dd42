"""Germinations the blueprint made fail: which errors they are, and the record the controller keeps.

A candidate the controller picks can fail to germinate because of the blueprint itself:

* G0 refuses it (:class:`~esper_core.errors.GerminationRefusedError`): its output changes
  shape or dtype, it writes into its input, its parameters or output are NaN/inf, or its
  forward raises on G0's probe input;
* its factory raises or returns something that is not a module
  (:class:`~esper_core.errors.BlueprintError`; also a ``validate`` or ``param_count`` that
  crashes only when the seed is built, the registry having listed it);
* it rejects the options it is built with (:class:`~esper_core.errors.OptionError`; the
  controller passes none, so the blueprint's defaults are what it rejects).

Those end neither the controller's step nor the run: they become a :class:`Refusal`. Every
other error (a bad argument, a slot that is not dormant, an unknown blueprint, a
distributed failure, a bug) is not the blueprint's doing and still propagates.
"""

from __future__ import annotations

import attrs

from esper_core.errors import BlueprintError, GerminationRefusedError, OptionError

__all__ = ["BLUEPRINT_FAULTS", "Refusal", "refusal_reason"]

#: The errors a germination raises when the blueprint, not the caller, is at fault.
BLUEPRINT_FAULTS: tuple[type[Exception], ...] = (GerminationRefusedError, BlueprintError, OptionError)

_REASON_CHARS = 500  # a pack's exception message can be long; the record keeps its head


@attrs.frozen
class Refusal:
    """A candidate the controller tried to germinate and the blueprint made fail.

    ``reason`` is the error's class and message (at most 500 characters), for example
    ``"GerminationRefusedError: G0 rejected germinating 'inplace' in slot 'r0c1':
    ['input_modified_in_place']"``; ``epoch`` is the ``epoch`` of the
    :meth:`~esper_core.control.HeuristicController.step` that tried it. The controller
    does not offer that (slot, blueprint) pair again.
    """

    slot_id: str
    blueprint: str
    reason: str
    epoch: int


def refusal_reason(error: BaseException) -> str:
    """``"ErrorClass: message"`` for a :class:`Refusal` (at most 500 characters)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
