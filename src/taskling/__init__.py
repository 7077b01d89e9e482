"""taskling: your documents and a plain-language task in, a small tuned model out.

The whole loop lives in `taskling.loop`; each stage is `taskling.stages.<verb>.run`.
Importing the package imports `taskling.tasks`, whose modules register the task types, so
every config is validated against the full registry (`core.tasktype`).
"""
__version__ = "0.1.0"

from . import tasks  # noqa: E402,F401  (registers the task types)
