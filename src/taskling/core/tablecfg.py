"""A `tables:` entry of taskling.yaml (`TableCfg`): a table (or a pattern over the text) of the pile
mapped to the task's input and output. Its own module so that config stays one page of sections.
"""
from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TableCfg(BaseModel):
    """A table in the pile mapped to task fields (tables:): each row becomes an example directly,
    its provenance the file, table and row. Tables come from CSV/TSV/XLSX/ODS sheets, HTML, PDF,
    DOCX and Markdown tables, and JSON/JSONL records. `input` and `output` are templates over the
    columns ("What does error {code} mean?", "{name}"); for extract, output maps each field to a
    template. `input` may be a list of phrasings: each row is asked in each (held out together). With
    `paraphrase: N` the teacher rewrites the input side N times per row. With `pattern:` (a regular
    expression with named groups) the rows are its matches in the matching documents' text instead,
    the groups their columns: passages such as "SQLITE_BUSY (5)" become rows {name, code}."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    match: str = "*"                          # glob over source paths (relative to the workspace)
    table: Union[int, str, None] = None       # which table of a file: its index, or a sheet/heading name
    input: Union[str, list[str]] = Field(min_length=1)
    output: Union[str, dict[str, str]]
    paraphrase: int = Field(0, ge=0, le=10)
    max_rows: int | None = Field(None, ge=1)
    eval_fraction: float | None = Field(None, ge=0, lt=1)  # rows held out for eval (default curate.eval_fraction)
    pattern: str | None = Field(None, max_length=500)  # rows from the text: a regex, its named groups the columns

    @field_validator("pattern")
    @classmethod
    def _groups(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import regex

        try:
            compiled = regex.compile(value)
        except regex.error as e:
            raise ValueError(f"pattern {value!r} is not a regular expression: {e}") from None
        if not compiled.groupindex:
            raise ValueError(f"pattern {value!r} names no group; name each column as (?P<code>[0-9]+)")
        return value
