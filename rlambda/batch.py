"""Batch scoring of a CSV file: every row scored, or written to an errors file with the reason.

Rows are read as a stream and scored in chunks (one R call per chunk), so
memory stays bounded whatever the file's size; outputs are written to local
temporary files and uploaded whole, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

from . import rsession
from .blobs import Blobs, iter_lines
from .errors import BadRequest
from .model import Model

log = logging.getLogger(__name__)
CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote."""

    source: str
    output: str
    errors_output: str | None
    rows: int
    scored: int
    failed: int
    model_version: str | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-able summary for logs and the invocation's result."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def output_keys(key: str) -> tuple[str, str]:
    """``inputs/a/b.csv`` -> ``outputs/a/b.csv`` and ``outputs/a/b.errors.csv``."""
    rel = key[len("inputs/"):] if key.startswith("inputs/") else key.rsplit("/", 1)[-1]
    stem = rel[:-4] if rel.lower().endswith(".csv") else rel
    return f"outputs/{stem}.csv", f"outputs/{stem}.errors.csv"


def _rows(lines: Iterator[bytes]) -> Iterator[list[str]]:
    text = (line.decode("utf-8", errors="replace") for line in lines)
    return csv.reader(text)


def _flatten(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in result.items():
        if isinstance(value, dict):  # per-class probabilities
            out.update({f"{name}_{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


def score_file(model: Model, blobs: Blobs, key: str, out: Blobs | None = None,
               chunk_rows: int = CHUNK_ROWS, tmp_dir: str | None = None) -> BatchResult:
    """Score every row of the CSV at ``key``; write outputs beside it under outputs/."""
    started = time.perf_counter()
    out = out or blobs
    out_key, err_key = output_keys(key)
    version = model.source.version or model.source.provenance()["version"]
    tmp_dir = tmp_dir or tempfile.gettempdir()
    os.makedirs(tmp_dir, exist_ok=True)
    ok_file = tempfile.NamedTemporaryFile("w", newline="", dir=tmp_dir, prefix=".batch-", suffix=".csv", delete=False)
    err_file = tempfile.NamedTemporaryFile("w", newline="", dir=tmp_dir, prefix=".batch-", suffix=".csv", delete=False)
    total = scored = failed = 0
    try:
        with blobs.open(key) as body, ok_file, err_file:
            reader = _rows(iter_lines(body))
            header = next(reader, None) or []
            ok_writer, err_writer = csv.writer(ok_file), csv.writer(err_file)
            err_writer.writerow(["row", "reason", *header])
            if not header:
                # nothing to score; say so where the outputs are looked for
                err_writer.writerow([0, "the file is empty: a CSV with a header row is expected"])
                failed = 1
            out_header: list[str] | None = None
            chunk: list[tuple[int, list[str]]] = []

            def flush() -> None:
                nonlocal out_header, scored, failed
                good, results = _score_chunk(model, header, chunk, err_writer)
                failed += len(chunk) - len(good)
                for (_, values), result in zip(good, results):
                    flat = _flatten(result)
                    if out_header is None:
                        out_header = [*header, *flat, "model_version"]
                        ok_writer.writerow(out_header)
                    ok_writer.writerow([*values, *flat.values(), version])
                scored += len(good)
                chunk.clear()
                rsession.collect_garbage()  # keeps memory flat whatever the file's size

            for values in reader:
                if not values:
                    continue  # blank line
                total += 1
                chunk.append((total, values))
                if len(chunk) >= chunk_rows:
                    flush()
            if chunk:
                flush()
            if out_header is None:
                ok_writer.writerow([*header, "model_version"])
        out.upload(out_key, ok_file.name)
        if failed:
            out.upload(err_key, err_file.name)
    finally:
        for name in (ok_file.name, err_file.name):
            try:
                os.unlink(name)
            except OSError:
                pass
    result = BatchResult(blobs.uri(key), out.uri(out_key), out.uri(err_key) if failed else None,
                         total, scored, failed, version, round(time.perf_counter() - started, 3))
    log.info("batch scored", extra=result.summary())
    return result


def _score_chunk(model: Model, header: list[str], chunk: list[tuple[int, list[str]]],
                 err_writer: Any) -> tuple[list[tuple[int, list[str]]], list[dict[str, Any]]]:
    """Score a chunk in one R call; on bad rows, find them, report them, score the rest."""
    width = len(header)
    shaped = [(n, v) for n, v in chunk if len(v) == width]
    errors = [(n, f"has {len(v)} fields, the header has {width}", v) for n, v in chunk if len(v) != width]
    rows = [dict(zip(header, v)) for _, v in shaped]
    good, good_rows = shaped, rows
    try:
        results = model.predict(rows, "row") if rows else []
    except BadRequest:
        # Some rows are bad: check each alone (cheap, Python only), then score the good ones together.
        good, good_rows = [], []
        for (n, values), row in zip(shaped, rows):
            try:
                model.prototype.columns([row])
            except BadRequest as exc:
                reason = "; ".join(f"{p.field} {p.problem}" for p in exc.problems) or exc.message
                errors.append((n, reason, values))
                continue
            good.append((n, values))
            good_rows.append(row)
        results = model.predict(good_rows, "row") if good_rows else []
    for n, reason, values in sorted(errors, key=lambda e: e[0]):
        err_writer.writerow([n, reason, *values])
    return good, results
