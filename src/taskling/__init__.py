"""taskling: your documents and a plain-language task in, a small tuned model out.

    import taskling
    ws = taskling.open("my-task")            # the folder holding taskling.yaml
    ws.run()                                  # the whole loop; or ws.ingest(), ws.train(), ...
    with ws.model() as model:
        print(model.predict(["an input"])[0].output)

The Python API (`taskling.api`) is what the CLI calls: open a workspace, run a stage or the whole
line, read typed results, export datasets, load an exported model and predict. The whole loop lives
in `taskling.loop`; each stage is `taskling.stages.<verb>.run`. Importing the package imports
`taskling.tasks`, whose modules register the task types, so every config is validated against the
full registry (`core.tasktype`).
"""
__version__ = "0.1.0"

from . import tasks  # noqa: E402,F401  (registers the task types)
from .api import Model, Prediction, Workspace, init, load_model, open, predict_file  # noqa: E402,F401
from .core.errors import TasklingError  # noqa: E402,F401

__all__ = ["Model", "Prediction", "TasklingError", "Workspace", "init", "load_model", "open", "predict_file"]
