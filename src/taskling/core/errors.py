"""User-facing errors: one line naming the problem and what to do.

The CLI prints a TasklingError as a single line and exits non-zero; any other
exception is a bug and shows its traceback only with --debug.
"""


class TasklingError(Exception):
    """A problem the user can fix (bad file, bad setting, busy port...)."""

    exit_code = 2


class TeacherOutputError(TasklingError):
    """The teacher answered with text that does not parse for the task."""

    def __init__(self, message: str, kind: str = "unparsable"):
        super().__init__(message)
        self.kind = kind  # empty | not_json | wrong_fields | truncated | off_task | unparsable


class TeacherUnavailable(TasklingError):
    """The teacher cannot be used at all (wrong key, unknown model, server down):
    the stage stops, keeping every call already made."""
