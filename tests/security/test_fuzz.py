"""A bounded run of bench/fuzz.py in `make test`: both HTTP servers answer drawn and broken requests
with no 5xx and no broken connection, and every converter reads mutated real files with no crash,
no hang past its time limit and no exception other than the ConvertError users see. The long run
(thousands of cases) is `python bench/fuzz.py`, which writes bench/results/fuzz.json."""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("taskling_fuzz", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_serve_answers_fuzzed_requests_without_a_5xx(fuzz):
    server, url = fuzz.run_server(fuzz.serve_app())
    try:
        got = fuzz.drive(url, fuzz.serve_case, 250, seed=7)
    finally:
        server.should_exit = True
    assert got["cases"] == 250 and got["5xx_or_broken"] == 0, got["failures"]
    assert len(got["by_status"]) >= 4  # the draws reach past the guard: 200s, 400s, 404s, 403s...


def test_the_ui_answers_fuzzed_requests_without_a_5xx(fuzz):
    from taskling.ui import start

    with tempfile.TemporaryDirectory() as tmp:
        server, url, token = start(fuzz.ui_workspace(Path(tmp)))
        try:
            got = fuzz.drive(url, fuzz.ui_case, 250, seed=7, token=token)
        finally:
            server.should_exit = True
    assert got["cases"] == 250 and got["5xx_or_broken"] == 0, got["failures"]
    assert got["by_status"].get("200", 0) > 50


def test_every_converter_survives_mutated_real_files(fuzz):
    got = fuzz.fuzz_converters(files_per_format=5, seed=7, timeout_s=10.0)
    assert got["cases"] == 5 * len(got["per_format"]) and len(got["per_format"]) >= 12
    assert (got["crash"], got["hang"], got["error"]) == (0, 0, 0), got["errors"]
    assert got["worker_peak_rss_mb"] < 1024
