"""The event sinks of ``esper demo``: ``--events`` (JSON Lines), ``--events-csv``, ``--tensorboard``.

Every lifecycle event of every grown model goes to the sinks of :mod:`esper_core.sinks`,
with the run it belongs to. The file sinks get three context fields, right after ``time``:
``seed`` (the random seed of the run, as in ``report.json``'s ``runs[].seed``), ``model``
(``"grown:<strategy>"``, the key of ``runs[].models``) and ``epoch``, numbered as in the
printed event lines and ``report.json``: the epoch whose end-of-epoch lifecycle step (or, for
the governor, whose training) caused the event. TensorBoard gets one run folder per seed and
strategy, ``<DIR>/seed<S>-<strategy>``, with the epoch as the step.

The files are opened (and the folder created) before any training, so a path that cannot
be written stops the demo at once with one line (:class:`~esper_core.demo.OutputError`).
Each file is replaced, not appended to: one file holds one demo run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esper_core.demo.settings import DemoSettings, OutputError
from esper_core.sinks import CsvSink, JsonlSink, SinkHandle, TensorBoardSink, register_sink

__all__ = ["CONTEXT_FIELDS", "DemoEventSinks", "tensorboard_run"]

#: Fields the demo adds to every line of ``--events`` and every row of ``--events-csv``.
CONTEXT_FIELDS = ("seed", "model", "epoch")


def tensorboard_run(seed: int, model: str) -> str:
    """The TensorBoard run folder name of one grown model: ``grown:cheapest`` of seed 3 -> ``seed3-cheapest``."""
    return f"seed{seed}-{model.partition(':')[2] or model}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class DemoEventSinks:
    """The sinks ``settings`` asks for, open for the whole demo; close with :meth:`close`.

    Raises :class:`~esper_core.demo.OutputError` naming the flag, the path and the
    reason when a file cannot be created or the TensorBoard folder cannot be written.
    """

    def __init__(self, settings: DemoSettings) -> None:
        self._where: dict[str, Any] = dict.fromkeys(CONTEXT_FIELDS)
        context = {key: (lambda key=key: self._where[key]) for key in CONTEXT_FIELDS}
        self._files: list[JsonlSink | CsvSink] = []
        self._tensorboard = None if settings.tensorboard is None else Path(settings.tensorboard)
        self.paths: list[Path] = []
        try:
            for flag, path, kind in (
                ("--events", settings.events, JsonlSink),
                ("--events-csv", settings.events_csv, CsvSink),
            ):
                if path is None:
                    continue
                try:
                    self._files.append(kind(path, mode="w", context=context))
                except OSError as exc:
                    raise OutputError(f"cannot write {flag} {path!r}: {_reason(exc)}") from None
                self.paths.append(Path(path))
            if self._tensorboard is not None:
                self._check_folder(self._tensorboard)
                self.paths.append(self._tensorboard)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check_folder(folder: Path) -> None:
        probe = folder / ".esper-demo-write-test"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"cannot write --tensorboard {str(folder)!r}: {_reason(exc)}") from None

    @property
    def active(self) -> bool:
        """Whether any sink was asked for."""
        return bool(self._files) or self._tensorboard is not None

    @contextlib.contextmanager
    def run(self, seed: int, model: str) -> Iterator[None]:
        """The block in which grown model ``model`` of random seed ``seed`` trains: its events go out."""
        self._where.update(seed=seed, model=model, epoch=0)
        sinks: list[Any] = list(self._files)
        board = None
        if self._tensorboard is not None:
            board = TensorBoardSink(
                self._tensorboard / tensorboard_run(seed, model), step=lambda: self._where["epoch"]
            )
            sinks.append(board)
        handles: list[SinkHandle] = []
        try:
            for sink in sinks:
                handles.append(register_sink(sink, name=f"esper-demo:{type(sink).__name__}"))
            yield
        finally:
            for handle in handles:
                handle.unregister()
            if board is not None:
                board.close()
            self._where.update(dict.fromkeys(CONTEXT_FIELDS))

    def at_epoch(self, epoch: int) -> None:
        """The epoch the next events belong to (called as each event reaches the demo's observer,
        which runs before the sinks: a slot calls its observers, then the ``esper_seed_event`` hook)."""
        self._where["epoch"] = epoch

    def close(self) -> None:
        """Close the files (flushed as written already)."""
        for sink in self._files:
            sink.close()
