"""The ``esper demo`` command (needs the ``demo`` extra: scikit-learn, matplotlib, rich).

Nothing here is imported by ``import esper_core``; the heavy dependencies are imported
inside the functions that use them.
"""

from esper_core.demo.cli import build_parser, main, run_demo
from esper_core.demo.settings import DemoSettings, OutputError, SettingsError

__all__ = ["DemoSettings", "OutputError", "SettingsError", "build_parser", "main", "run_demo"]
