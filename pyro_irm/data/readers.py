"""Record readers for logs and data sets: JSONL, CSV/TSV, Parquet and Hugging Face ``datasets``.

Every reader yields ``(row_number, record)`` pairs, row numbers counted from 1 in the order of the
source, so that validation can name the file and row of a problem. A line that cannot be parsed is
yielded as a :class:`ParseError` in place of a record.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
# The largest limit every platform's C long accepts; a field this big is a log's problem, not a limit's.
_CSV_FIELD_LIMIT = 2**31 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ParseError:
    """A row that could not be read at all (for example a line that is not JSON)."""

    reason: str
    field: str = "(row)"


def data_suffix(path: Path) -> str:
    """The format suffix of ``path``, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_hub_name(source: str) -> bool:
    """A ``datasets`` hub name such as ``nvidia/HelpSteer`` (or ``hf://nvidia/HelpSteer``), not a path."""
    if source.startswith("hf://"):
        return True
    looks_like_a_file = data_suffix(Path(source)) in JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
    return (
        not Path(source).exists()
        and source.count("/") == 1
        and not source.startswith((".", "/", "~"))
        and not looks_like_a_file
    )


def source_name(source: Any) -> str:
    """How messages name a source: its path or hub name, or the kind of in-memory rows."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    return f"<{type(source).__name__}>"


def _in_memory(source: Any) -> bool:
    return not isinstance(source, str | os.PathLike)


def _iter_in_memory(source: Any, split: str | None) -> Iterator[tuple[int, dict | ParseError]]:
    """Rows of a pandas DataFrame, a ``datasets`` Dataset (or DatasetDict) or a list of dicts."""
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas
        records = source.to_dict(orient="records")
    elif hasattr(source, "features") or hasattr(source, "keys") and hasattr(source, "column_names"):
        records = _pick_split(source, split, source_name(source))
    elif isinstance(source, list | tuple):
        records = source
    else:
        raise ValueError(
            f"cannot read rows from a {type(source).__name__}; give a path, a hub name, a pandas "
            "DataFrame, a datasets.Dataset or a list of dicts"
        )
    for row, record in enumerate(records, start=1):
        yield row, record if isinstance(record, dict) else ParseError("not a mapping of column to value")


def iter_records(source: Any, split: str | None = None) -> Iterator[tuple[int, dict | ParseError]]:
    """Records of a JSONL/CSV/TSV/Parquet file (``.gz`` allowed for text formats), a directory saved
    by ``datasets.Dataset.save_to_disk``, a Hugging Face hub data set (``split`` picks its split), or
    rows in memory (a pandas DataFrame, a ``datasets`` Dataset, a list of dicts).
    """
    if _in_memory(source):
        yield from _iter_in_memory(source, split)
        return
    text = str(source)
    if is_hub_name(text):
        yield from _iter_hub(text.removeprefix("hf://"), split)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        yield from _iter_saved_dataset(path, split)
        return
    suffix = data_suffix(path)
    if suffix in JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES:
        yield from _iter_file(path, suffix)
    else:
        raise ValueError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; use .jsonl, .csv, .tsv or .parquet "
            "(optionally .gz), a saved `datasets` directory, or a hub name"
        )


def _iter_file(path: Path, suffix: str) -> Iterator[tuple[int, dict | ParseError]]:
    """The records of one file; a file that cannot be read as its suffix says is named, whole."""
    import zlib

    row = 0
    try:
        if suffix in JSON_SUFFIXES:
            records = _iter_jsonl(path)
        elif suffix in CSV_SUFFIXES:
            records = _iter_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
        else:
            records = _iter_parquet(path)
        for row, record in records:
            yield row, record
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(
            f"{path}: not a readable gzip file after row {row} ({error}); it is truncated or not gzip"
        ) from None
    except OSError as error:
        if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ValueError(
            f"{path}: cannot be read after row {row} ({type(error).__name__}: {error})"
        ) from None
    except Exception as error:
        if suffix not in PARQUET_SUFFIXES:  # the text readers' own errors name the file already
            raise
        raise ValueError(f"{path}: not a readable Parquet file ({type(error).__name__}: {error})") from None


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def invalid_text(value: Any) -> str | None:
    """Why a decoded value is not valid Unicode text (undecodable bytes or a lone surrogate), or None.

    Undecodable bytes arrive as the surrogates U+DC80..U+DCFF (``errors="surrogateescape"``); a
    lone surrogate can also come from a JSON escape such as ``"\\ud800"``. Neither can be encoded
    again, so a row holding one would fail far from where it came in.
    """
    if isinstance(value, str):
        if (found := _SURROGATE.search(value)) is None:
            return None
        code, position = ord(found.group()), found.start()
        if 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02x} at character {position} is not valid UTF-8"
        return f"character {position} is a lone surrogate (U+{code:04X}), not valid Unicode"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    return next((f"at {key!r}, {why}" for key, item in items if (why := invalid_text(item))), None)


def _invalid_field(record: dict) -> tuple[str, str] | None:
    """``(why, field)`` of the first field of ``record`` that is not valid text, or None."""
    return next(((why, str(key)) for key, item in record.items() if (why := invalid_text(item))), None)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | ParseError]]:
    row = 0
    offset = 0  # byte offset of the line in the (decompressed) file
    with _open_binary(path) as handle:
        for number, line in enumerate(handle):
            start, offset = offset, offset + len(line)
            if number == 0 and line.startswith(codecs.BOM_UTF8):
                line, start = line[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
            if not line.strip():
                continue
            row += 1
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                byte, at = line[error.start], start + error.start
                yield row, ParseError(f"not valid UTF-8 (byte 0x{byte:02x} at byte offset {at} of the file)")
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield row, ParseError(f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            except ValueError as error:  # an integer past Python's digit limit (4300) is the known case
                limit = "Exceeds the limit" in str(error)
                why = "a number with thousands of digits, out of range" if limit else str(error)[:120]
                yield row, ParseError(f"not valid JSON ({why})")
                continue
            if not isinstance(record, dict):
                yield row, ParseError("not a JSON object")
            elif "\\u" in text and (problem := _invalid_field(record)):
                yield row, ParseError(*problem)
            else:
                yield row, record


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict | ParseError]]:
    # Fields of any size (the csv module stops at 128 KiB by default); undecodable bytes are kept as
    # surrogates so the row holding them can be named, and a byte-order mark is dropped.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    text = io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline="")
    with text as handle:
        # strict: a quote that opens a field and never closes where a field ends is an error, not
        # the start of one cell that swallows every row up to the next quote.
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
        row, starts_at = 0, 2
        try:
            for row, record in enumerate(reader, start=1):
                starts_at = reader.line_num + 1
                if None in record:  # more cells than header columns
                    columns = len(reader.fieldnames or [])
                    yield row, ParseError(f"{columns} columns in the header but more in this row")
                    continue
                if problem := _invalid_field(record):
                    yield row, ParseError(*problem)
                    continue
                # Cells stay text ("" included); the schema parses numbers and treats "" as missing there.
                yield row, record
        except csv.Error as error:  # a NUL byte, or a quote that is never closed
            quote = "quote" in str(error) or "end of data" in str(error) or "expected after" in str(error)
            raise ValueError(
                f"{path}: row {row + 1} (line {starts_at}): not valid CSV ({error}); "
                + (
                    "a field of this row opens a quote that does not close where a field ends, so the "
                    f"rows after it (to line {reader.line_num}) would be read as one cell. Close or "
                    'double the quote ("") in that field'
                    if quote
                    else "fix the row or remove it"
                )
            ) from None
        if reader.fieldnames and (why := invalid_text(list(reader.fieldnames))):
            raise ValueError(f"{path}: the header is not valid text ({why})")


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _iter_dataset(dataset: Any) -> Iterator[tuple[int, dict]]:
    yield from enumerate(dataset, start=1)


def _pick_split(dataset: Any, split: str | None, where: str) -> Any:
    if not hasattr(dataset, "keys"):  # a single Dataset
        return dataset
    names = list(dataset.keys())
    if split is None:
        if len(names) == 1:
            return dataset[names[0]]
        raise ValueError(f"{where} has splits {names}; choose one with split=")
    if split not in names:
        raise ValueError(f"{where} has no split {split!r}; it has {names}")
    return dataset[split]


def _iter_saved_dataset(path: Path, split: str | None) -> Iterator[tuple[int, dict]]:
    import datasets

    yield from _iter_dataset(_pick_split(datasets.load_from_disk(str(path)), split, str(path)))


def _iter_hub(name: str, split: str | None) -> Iterator[tuple[int, dict]]:
    import datasets

    yield from _iter_dataset(_pick_split(datasets.load_dataset(name, split=split), split, name))
