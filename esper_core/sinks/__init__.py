"""Ready telemetry sinks: lifecycle events to JSON Lines, CSV or TensorBoard, in one line.

::

    from esper_core.sinks import CsvSink, JsonlSink, TensorBoardSink

    with JsonlSink("events.jsonl"), TensorBoardSink("runs/grow"):
        train()                                  # every event of every slot is written

    JsonlSink("events.jsonl").register()         # or: for the rest of the process

A sink is an ``esper`` pluggy plugin: an object with an ``esper_seed_event(self, event)``
method marked with :data:`esper_core.hookimpl`. Write your own the same way and turn it on
with :func:`register_sink` or :func:`registered`; :func:`event_record` turns any event into
JSON-able values. See ``docs/telemetry-sinks.md``.
"""

from esper_core.sinks.csv_file import EXTRA_COLUMN, CsvSink, csv_columns
from esper_core.sinks.jsonl import JsonlSink
from esper_core.sinks.record import EVENT_KEY, TIME_KEY, event_fields, event_record, to_jsonable
from esper_core.sinks.registration import EventSink, SinkHandle, register_sink, registered
from esper_core.sinks.tensorboard_writer import TensorBoardSink, event_scalars

__all__ = [
    "EVENT_KEY",
    "EXTRA_COLUMN",
    "TIME_KEY",
    "CsvSink",
    "EventSink",
    "JsonlSink",
    "SinkHandle",
    "TensorBoardSink",
    "csv_columns",
    "event_fields",
    "event_record",
    "event_scalars",
    "register_sink",
    "registered",
    "to_jsonable",
]
