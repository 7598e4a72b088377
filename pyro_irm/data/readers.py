"""Record readers for logs and data sets: JSONL, CSV/TSV, Parquet and Hugging Face ``datasets``.

Every reader yields ``(row_number, record)`` pairs, row numbers counted from 1 in the order of the
source, so that validation can name the file and row of a problem. A line that cannot be parsed is
yielded as a :class:`ParseError` in place of a record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class ParseError:
    """A row that could not be read at all (for example a line that is not JSON)."""

    reason: str


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
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def iter_records(source: str | Path, split: str | None = None) -> Iterator[tuple[int, dict | ParseError]]:
    """Records of a JSONL/CSV/TSV/Parquet file (``.gz`` allowed for text formats), a directory saved
    by ``datasets.Dataset.save_to_disk``, or a Hugging Face hub data set (``split`` picks its split).
    """
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
    if suffix in JSON_SUFFIXES:
        yield from _iter_jsonl(path)
    elif suffix in CSV_SUFFIXES:
        yield from _iter_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in PARQUET_SUFFIXES:
        yield from _iter_parquet(path)
    else:
        raise ValueError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; use .jsonl, .csv, .tsv or .parquet "
            "(optionally .gz), a saved `datasets` directory, or a hub name"
        )


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | ParseError]]:
    row = 0
    with _open_text(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            row += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield row, ParseError(f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            yield row, record if isinstance(record, dict) else ParseError("not a JSON object")


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict | ParseError]]:
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row, record in enumerate(reader, start=1):
            if None in record:  # more cells than header columns
                yield (
                    row,
                    ParseError(f"{len(reader.fieldnames or [])} columns in the header but more in this row"),
                )
                continue
            # Cells stay text ("" included); the schema parses numbers and treats "" as missing there.
            yield row, record


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
