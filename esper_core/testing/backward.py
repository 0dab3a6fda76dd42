"""The check that runs backward where a native crash would otherwise kill the test run.

In a slot a seed's input often does not require grad: the input is isolated
(``h.detach()``), or the host in front of the slot is frozen. torch 2.13's GroupNorm
segfaults in backward on exactly such an input when it is channels_last (the reproduction
and the fix for authors, :class:`esper_core.groupnorm.GroupNorm`, are in :mod:`esper_core.groupnorm`).
A segfault cannot be caught, so the kit runs this backward pass in a child process: a
crash becomes a failure naming the blueprint and the signal, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import torch

from esper_core.testing.recorder import Recorder, describe_exception
from esper_core.testing.report import Check
from esper_core.testing.subject import Subject, perturb_

__all__ = ["CHILD_TIMEOUT_S", "check_backward_in_child"]

CHILD_TIMEOUT_S = 120.0
"""How long the child may take; a hang past it is a failure, not a hung run."""


def _child(conn: Connection, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """Forward and backward of a seed with perturbed weights on an input that does not
    require grad, channels_last where the topology uses it; sends ``(phase, message)``."""
    torch.set_num_threads(1)  # a forked OpenMP pool is not the parent's; keep the child simple
    phase = "forward"
    try:
        module = perturb_(subject.build(dim, options, seed=17)).train()
        x = subject.input(dim, seed=18)
        if subject.topology.channels_last:
            x = x.to(memory_format=torch.channels_last)
        loss = module(x).float().square().sum()
        phase = "backward"
        if loss.requires_grad:  # a seed without parameters has no backward to run
            loss.backward()
    except BaseException as exc:  # reported to the parent, which records it
        conn.send((phase, f"backward raised {describe_exception(exc)}"))
    else:
        conn.send(("done", ""))
    finally:
        conn.close()


def _context() -> Any:
    # fork: the child inherits the spec as it is (a test's temporary blueprint, a lambda
    # factory), which spawn would have to pickle or import again.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def check_backward_in_child(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """Backward on an input that does not require grad must run; it runs in a child process."""
    what = "a channels_last input" if subject.topology.channels_last else "an input"
    expected = f"backward on {what} that does not require grad to run (in a child process)"
    rec.ran(Check.BACKWARD_NO_GRAD_INPUT)
    try:
        ctx = _context()
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child, args=(send, subject, dim, dict(options)), daemon=True)
        process.start()
    except Exception as exc:
        rec.fail(
            Check.BACKWARD_NO_GRAD_INPUT,
            expected=expected,
            actual=f"the child process could not start: {describe_exception(exc)}",
            dim=dim,
            options=options,
        )
        return
    send.close()
    process.join(CHILD_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
        actual = f"the child did not finish within {CHILD_TIMEOUT_S:.0f} s"
    elif process.exitcode is not None and process.exitcode < 0:
        name = signal.Signals(-process.exitcode).name
        actual = f"the process died with {name} (exit code {process.exitcode})"
        if subject.topology.channels_last:
            actual += "; a plain nn.GroupNorm? use esper_core.groupnorm.GroupNorm (docs/writing-a-blueprint-pack.md)"
    else:
        phase, actual = (
            receive.recv() if receive.poll() else ("", f"the child exited with code {process.exitcode}")
        )
        if phase == "forward":
            actual = ""  # the forward and layout checks report a forward that raises
    receive.close()
    rec.expect(
        not actual, Check.BACKWARD_NO_GRAD_INPUT, expected=expected, actual=actual, dim=dim, options=options
    )
