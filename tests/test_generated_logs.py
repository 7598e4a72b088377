"""Generated logs (random columns, value types, encodings, sizes, broken lines) through ``read_log``
and the CLI: every case ends in success, a counted skip, or a refusal that names the file (and the
row, for a row's fault); never another exception, never a traceback, never a partial output."""

import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_irm.cli import main
from pyro_irm.data.logs import LogFormatError, LogSchema, read_log

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", " ", "a,b", 'q"uote', "line\nbreak"]
)
_VALUE = st.one_of(
    st.sampled_from([0, 1, 0.0, 1.0, True, False, "0", "1", "true", "", "nan", None, 2, -1, 0.5, "1e400"]),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.lists(st.integers(0, 1), max_size=2),
)
_COLUMNS = ["prompt", "response", "action", "label", "extra"]


@st.composite
def _logs(draw):
    """``(file name, bytes)`` of a generated log."""
    columns = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=5, unique=True))
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {c: (_TEXT if c in ("prompt", "response") else _VALUE) for c in columns},
                optional={c: _VALUE for c in _COLUMNS if c not in columns},
            ),
            max_size=25,
        )
    )
    form = draw(st.sampled_from(["jsonl", "csv"]))
    if form == "jsonl":
        lines = [json.dumps(row, default=str) for row in rows]
        if lines and draw(st.booleans()):
            lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(["{", "[1, 2]", "null", "{]"]))
        text = "\n".join(lines) + ("\n" if lines else "")
    else:
        buffer = io.StringIO()
        import csv

        header = list(dict.fromkeys(key for row in rows for key in row)) or columns
        writer = csv.DictWriter(buffer, header)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        if rows and draw(st.booleans()):
            text += "x,y,z,w,v,u,t\n"  # more cells than the header
    data = text.encode("utf-8", errors="surrogatepass")
    encoding = draw(st.sampled_from(["utf-8", "bom", "bad byte", "latin-1"]))
    if encoding == "bom":
        data = b"\xef\xbb\xbf" + data
    elif encoding == "bad byte" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + b"\xff" + data[at:]
    elif encoding == "latin-1":
        data = text.encode("latin-1", errors="replace")
    return f"log.{form}", data


def _row_named(message: str, name: str) -> bool:
    return name in message and (
        re.search(r"\brows?:? \d+", message) is not None or "no usable rows" in message
    )


@settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(log=_logs(), on_error=st.sampled_from(["raise", "skip"]), limit=st.sampled_from([None, 0.01, 0.5]))
def test_read_log_succeeds_skips_or_names_the_row(log, on_error, limit):
    name, data = log
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(data)
        try:
            result = read_log(path, LogSchema(), on_error=on_error, max_bad_fraction=limit)
        except LogFormatError as error:
            assert _row_named(str(error), name) or "columns" in str(error), str(error)
            return
        except ValueError as error:  # the file as a whole (an unparsable CSV header or tail)
            assert name in str(error), str(error)
            return
        assert len(result) == result.report.rows_kept > 0
        if on_error == "raise":
            assert not result.report.dropped
        for text in (*result.prompts, *result.responses):
            text.encode("utf-8")  # every kept text is valid Unicode
        present = result.actions[~np.isnan(result.actions)]
        assert set(np.unique(present)) <= {0.0, 1.0}
        # an empty action cell is marginalized, never silent: the report counts every one
        assert sum(count for _, count in result.report.missing) == int(np.isnan(result.actions).sum())


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs(), skip=st.booleans())
def test_the_cli_exits_0_or_2_with_a_message_and_writes_whole_outputs(log, skip):
    name, data = log
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        path = directory / name
        path.write_bytes(data)
        try:  # embeddings for the rows that will be kept, so that the fit itself can run
            kept = len(read_log(path, LogSchema(), on_error="skip"))
        except ValueError:
            kept = 3
        np.save(
            directory / "e.npy", np.random.default_rng(0).normal(size=(max(kept, 1), 4)).astype(np.float32)
        )
        arguments = ["fit", str(path), "--embeddings", str(directory / "e.npy"), "--out",
                     str(directory / "run"), "--max-epochs", "1", "--quiet", "--method", "naive",
                     *(["--skip-bad-rows", "--max-bad-fraction", "0.5"] if skip else [])]  # fmt: skip
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(arguments)
        message = stderr.getvalue()
        assert code in (0, 2), message
        assert "Traceback" not in message
        run = directory / "run"
        if code == 2:
            assert "error:" in message and not run.exists()
        else:
            assert (run / "run.json").is_file() and (run / "model" / "weights.safetensors").is_file()
        assert not [p for p in directory.rglob("*.tmp*")], "a temporary was left behind"
