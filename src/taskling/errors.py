"""User-facing errors: one line naming the problem and what to do.

The CLI prints a TasklingError as a single line and exits non-zero; any other
exception is a bug and shows its traceback only with --debug.
"""


class TasklingError(Exception):
    """A problem the user can fix (bad file, bad setting, busy port...)."""

    exit_code = 2


class TeacherOutputError(TasklingError):
    """The teacher answered with text that does not parse for the task."""
