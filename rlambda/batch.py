"""Batch scoring of a CSV file: every row scored, or written to an errors file with the reason.

The file is streamed in chunks of a few megabytes cut at record boundaries,
so memory stays bounded whatever its size. Python only checks the bytes
(UTF-8, a byte-order mark, whether any cell could start like a formula) and
cuts; R (``batch.R``, through
``rsession.call_file``) reads each chunk into columns with data.table's
``fread``, validates and scores whole columns, and appends the results with
``fwrite``. Outputs go to local temporary files and are uploaded whole, so a
reader never sees half a file; a re-run replaces both files (an errors file
from an earlier run is deleted when this run has no errors).

The same engine scores one batch of a Step Functions Distributed Map
(:func:`score_items`) into a part file, and :func:`collect` turns the map's
result manifest into one index of every part and every error.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

from . import rsession
from .blobs import Blobs, BlobMissing
from .errors import BadRequest, Problem
from .model import Model

log = logging.getLogger(__name__)
BATCH_R = Path(__file__).resolve().parent / "batch.R"
# About 110,000 rows of the admission file. Measured on 1M rows: 2 MB chunks
# were faster than 4 MB and 8 MB (1.0 s against 1.23 s; R's collections cost
# more as a chunk's strings grow), and the peak RSS was 146 MB (8 MB: 278;
# 141-145 MB after the batch-speed changes to the checks and the chunk file).
CHUNK_BYTES = 2 << 20
# A full R garbage collection every this many chunks (rsession.collect_garbage).
FULL_GC_EVERY = 3
_BOM = b"\xef\xbb\xbf"
# A cell starting with one of these is a formula to a spreadsheet (batch.R's
# rlb_triggers); a chunk without any of these bytes has no cell to neutralise.
_TRIGGERS = (b"=", b"+", b"-", b"@", b"\t", b"\r")
_EMPTY = "the file is empty: a CSV with a header row is expected"


class Refused(Exception):
    """The whole file cannot be scored (not UTF-8, no header); the message says why."""


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
    refused: str | None = None
    first_row: int = 1

    def summary(self) -> dict[str, Any]:
        """JSON-able summary for logs and the invocation's result."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def output_keys(key: str) -> tuple[str, str]:
    """``inputs/a/b.csv`` -> ``outputs/a/b.csv`` and ``outputs/a/b.errors.csv``."""
    stem = _stem(key)
    return f"outputs/{stem}.csv", f"outputs/{stem}.errors.csv"


def _stem(key: str) -> str:
    rel = key[len("inputs/"):] if key.startswith("inputs/") else key.rsplit("/", 1)[-1]
    return rel[:-4] if rel.lower().endswith(".csv") else rel


def part_keys(key: str, first_row: int) -> tuple[str, str]:
    """Where one Distributed Map batch of ``inputs/x.csv`` writes: ``outputs/x/part-<first row>.csv`` (+ errors)."""
    base = f"outputs/{_stem(key)}/part-{first_row:010d}"
    return f"{base}.csv", f"{base}.errors.csv"


def manifest_key(key: str) -> str:
    """The one index of a distributed run: ``outputs/x.manifest.json``."""
    return f"outputs/{_stem(key)}.manifest.json"


def model_version(model: Model) -> str:
    """The version every output row names (a versioned folder's version, else the file's hash)."""
    return model.source.version or str(model.source.provenance()["version"])


# ---------------------------------------------------------------------------
# Cutting a byte stream into chunks of whole records

def _quoted_at(buf: bytes, end: int) -> bool:
    # A newline is inside a quoted cell iff an odd number of quotes precede
    # it (RFC 4180 escapes a quote by doubling it, which keeps the parity).
    return buf.count(b'"', 0, end) % 2 == 1


def _cut(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that ends a record (0 if none)."""
    end = buf.rfind(b"\n")
    if end < 0 or b'"' not in buf:
        return end + 1
    while end >= 0 and _quoted_at(buf, end):
        end = buf.rfind(b"\n", 0, end)
    return end + 1


def _records(data: bytes, newlines: int | None = None) -> int:
    """Records in a chunk without quotes: its lines, less blank ones (fread skips those too).

    ``newlines``: ``data.count(b"\n")`` if the caller has it already (a
    1 ms scan of a 2 MB chunk).
    """
    if b"\n\n" in data or (b"\r" in data and b"\n\r\n" in data) or data.startswith((b"\n", b"\r\n")):
        return sum(1 for line in data.split(b"\n") if line.strip(b"\r"))
    if newlines is None:
        newlines = data.count(b"\n")
    return newlines + (0 if not data or data.endswith(b"\n") else 1)


def _triggers(data: bytes) -> bool:
    """Whether a cell of ``data`` may start like a spreadsheet formula (else batch.R skips that check)."""
    return any(t in data for t in _TRIGGERS)


def _first_record(buf: bytes) -> int:
    """Length of the first record of ``buf`` with its newline (all of it if it has none)."""
    end = buf.find(b"\n")
    while end >= 0 and _quoted_at(buf, end):
        end = buf.find(b"\n", end + 1)
    return len(buf) if end < 0 else end + 1


def _chunks(stream: BinaryIO, size: int) -> Iterator[tuple[bytes, int]]:
    """(chunk, offset in the file) pieces of about ``size`` bytes, each ending at a record's end."""
    buf, offset = b"", 0
    for piece in iter(lambda: stream.read(size), b""):
        buf += piece
        if len(buf) < size:
            continue
        cut = _cut(buf)
        if cut > 0:  # else a record longer than the buffer: read on
            yield buf[:cut], offset
            offset += cut
            buf = buf[cut:]
    if buf:
        yield buf, offset


class _Decoder:
    """Checks (UTF-8) or converts (a declared ASCII-compatible encoding) each chunk to UTF-8."""

    def __init__(self, encoding: str | None) -> None:
        name = codecs.lookup(encoding or "utf-8").name
        self.utf8 = name in ("utf-8", "utf-8-sig")
        self.name = "utf-8" if self.utf8 else name
        if not self.utf8 and any(c.encode(name) != c.encode("ascii") for c in '\n\r",'):
            raise Refused(f"encoding {encoding!r} is not ASCII-compatible; convert the file to UTF-8")
        self.lines = 0
        # the last chunk handed back as it came (UTF-8) and its newlines,
        # counted once here for the line numbers and reused by _records
        self._counted: tuple[bytes, int] | None = None

    def newlines(self, data: bytes) -> int | None:
        """``data.count(b"\n")`` if ``data`` is the chunk this decoder just handed back, else None."""
        counted = self._counted
        return counted[1] if counted is not None and counted[0] is data else None

    def __call__(self, chunk: bytes, offset: int) -> bytes:
        try:
            text = chunk.decode(self.name)
        except UnicodeDecodeError as exc:
            at = offset + exc.start
            line = self.lines + chunk.count(b"\n", 0, exc.start) + 1
            bad = chunk[exc.start:exc.start + 1].hex().upper()
            raise Refused(
                f"the file is not valid {self.name.upper()}: byte 0x{bad} at offset {at} (line {line}); "
                f"save it as UTF-8 (or declare its encoding) and upload it again"
            ) from None
        newlines = chunk.count(b"\n")
        self.lines += newlines
        if not self.utf8:
            self._counted = None
            return text.encode("utf-8")
        self._counted = (chunk, newlines)
        return chunk


# ---------------------------------------------------------------------------
# The engine: chunks in, two CSV files out

class _Job:
    """One output file and one errors file, written by R chunk after chunk."""

    def __init__(self, model: Model, header: list[str], tmp_dir: str) -> None:
        self.model = model
        self.header = header
        self.version = model_version(model)
        os.makedirs(tmp_dir, exist_ok=True)
        fd, self.out_path = tempfile.mkstemp(dir=tmp_dir, prefix=".batch-", suffix=".csv")
        os.close(fd)
        fd, self.err_path = tempfile.mkstemp(dir=tmp_dir, prefix=".batch-", suffix=".errors.csv")
        os.close(fd)
        fd, self.chunk_path = tempfile.mkstemp(dir=tmp_dir, prefix=".batch-", suffix=".chunk.csv")
        os.close(fd)
        self._chunk_fd: int | None = None  # opened by write_chunk, closed by cleanup
        self.rows = self.scored = self.failed = 0
        self.chunks = 0
        self.begin()

    def begin(self) -> None:
        """(Re)write both files' header rows, truncating them."""
        _r("rl_batch_begin", self.model.r, self.header, self.out_path, self.err_path)
        self.rows = self.scored = self.failed = 0

    def refuse(self, reason: str) -> None:
        """The file as a whole is refused: no scored rows, one error row 0 with the reason."""
        self.begin()
        _r("rl_batch_refuse", self.err_path, 0, reason)
        self.failed = 1

    def chunk(self, data: bytes, first_row: int, rows: Sequence[int] | None = None,
              newlines: int | None = None) -> int:
        """Score a chunk of records (no header); returns how many rows it held.

        ``newlines``: ``data.count(b"\n")`` if known (see :func:`_records`).
        """
        if b'"' in data:
            # Quoted cells can hold newlines, so lines are not records: the
            # csv module (the reference) splits the records, fread reads them.
            res = self._fallback(data, first_row, rows, "quoted cells")
        else:
            self.write_chunk(data)
            expected = _records(data, newlines)
            res = self._score(first_row, rows, None, False, expected, _triggers(data))
            if "fallback" in res:
                res = self._fallback(data, first_row, rows, str(res["fallback"]))
        # keeps R's heap flat whatever the file's size: a young collection
        # after each chunk, a full one after every FULL_GC_EVERY-th
        self.chunks += 1
        rsession.collect_garbage(full=self.chunks % FULL_GC_EVERY == 0)
        return res["rows"]

    def write_chunk(self, data: bytes) -> None:
        """Make ``data`` the chunk file R reads: written over the last one in place, then cut to length.

        Opening it with truncation freed its pages in the page cache and the
        write took them anew: 2 MB took 2 ms that way, 0.07 ms in place.
        """
        if self._chunk_fd is None:
            self._chunk_fd = os.open(self.chunk_path, os.O_WRONLY)
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.pwrite(self._chunk_fd, view[done:], done)
        os.ftruncate(self._chunk_fd, len(data))

    def _score(self, first_row: int, rows: Sequence[int] | None, ragged: list[str] | None,
               unescape: bool, expected: int, triggers: bool) -> dict[str, Any]:
        res = _r("rl_batch_chunk", self.model.r, self.chunk_path, self.header, first_row, rows, ragged,
                 unescape, expected, self.out_path, self.err_path, float(self.model.threshold), self.version,
                 triggers)
        if "fallback" not in res:
            res = {k: int(v[0]) for k, v in res.items()}
            self.rows += res["rows"]
            self.scored += res["scored"]
            self.failed += res["failed"]
        return res

    def _fallback(self, data: bytes, first_row: int, rows: Sequence[int] | None, why: str) -> dict[str, Any]:
        """A chunk fread did not read cleanly: Python's csv module (the reference) finds each record,
        names the ones of the wrong width, and hands R a clean chunk with those reasons."""
        log.info("chunk re-read with the csv module", extra={"first_row": first_row, "why": why})
        width = len(self.header)
        records = [r for r in csv.reader(io.StringIO(data.decode("utf-8"), newline="")) if r]
        numbers = list(rows) if rows is not None else list(range(first_row, first_row + len(records)))
        ragged: list[str] = []
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for rec in records:
            if len(rec) == width:
                ragged.append("")  # no reason: the row is well-shaped
            else:
                ragged.append(f"has {len(rec)} fields, the header has {width}")
                rec = (rec + [""] * width)[:width]
            writer.writerow(rec)
        self.write_chunk(buf.getvalue().encode("utf-8"))
        res = self._score(first_row, numbers, ragged if any(ragged) else None, True, len(records), _triggers(data))
        if "fallback" in res:
            raise rsession.RError(f"R could not read a chunk the csv module wrote: {res['fallback']}")
        return res

    def cleanup(self) -> None:
        """Remove the temporary files."""
        if self._chunk_fd is not None:
            os.close(self._chunk_fd)
            self._chunk_fd = None
        for name in (self.out_path, self.err_path, self.chunk_path):
            try:
                os.unlink(name)
            except OSError:
                pass


def _r(function: str, *args: Any) -> Any:
    try:
        return rsession.call_file(BATCH_R, function, *args, refusals=True)
    except rsession.RRefused as exc:
        raise Refused(str(exc)) from None


def _publish(job: _Job, out: Blobs, out_key: str, err_key: str) -> bool:
    """Upload the output, and the errors file if any (else delete a stale one); True if errors."""
    out.upload(out_key, job.out_path)
    if job.failed:
        out.upload(err_key, job.err_path)
        return True
    out.delete(err_key)
    return False


def score_file(model: Model, blobs: Blobs, key: str, out: Blobs | None = None,
               chunk_bytes: int = CHUNK_BYTES, tmp_dir: str | None = None,
               encoding: str | None = None) -> BatchResult:
    """Score every row of the CSV at ``key``; write outputs beside it under outputs/."""
    started = time.perf_counter()
    out = out or blobs
    out_key, err_key = output_keys(key)
    tmp_dir = tmp_dir or tempfile.gettempdir()
    job: _Job | None = None
    refused: str | None = None
    try:
        try:
            decode = _Decoder(encoding)
        except (LookupError, Refused) as exc:
            refused = f"cannot decode the file as {encoding!r}: {exc}"
            decode = _Decoder(None)
        with blobs.open(key) as body:
            pieces = _chunks(body, chunk_bytes)
            first = next(pieces, None)
            header: list[str] = []
            data, offset = first if first is not None else (b"", 0)
            if data.startswith(_BOM):
                data, offset = data[len(_BOM):], offset + len(_BOM)
            end = _first_record(data)
            head, data = data[:end], data[end:]
            try:
                if refused is None:
                    head = decode(head, offset)
                    header = next(csv.reader(io.StringIO(head.decode("utf-8"), newline="")), [])
                    data = decode(data, offset + end)
            except Refused as exc:
                refused = str(exc)
            job = _Job(model, header, tmp_dir)
            if refused is None and not header:
                refused = _EMPTY
            if refused is None:
                row = 1
                try:
                    if data:
                        row += job.chunk(data, row, newlines=decode.newlines(data))
                    for piece, offset in pieces:
                        data = decode(piece, offset)
                        row += job.chunk(data, row, newlines=decode.newlines(data))
                except Refused as exc:
                    refused = str(exc)
            if refused is not None:
                job.refuse(refused)
        wrote_errors = _publish(job, out, out_key, err_key)
    finally:
        if job is not None:
            job.cleanup()
    result = BatchResult(blobs.uri(key), out.uri(out_key), out.uri(err_key) if wrote_errors else None,
                         job.rows, job.scored, job.failed, job.version,
                         round(time.perf_counter() - started, 3), refused)
    log.info("batch scored", extra=result.summary())
    return result


# ---------------------------------------------------------------------------
# Step Functions Distributed Map: one batch of rows, and the final index

@dataclass(frozen=True)
class MapBatch:
    """A Distributed Map batch: ``{"Items": [{"index": i, "row": {...}}, ...], "BatchInput": {...}}``.

    The CSV ``ItemReader`` gives each row as an object of its header's names;
    the state machine's ``ItemSelector`` wraps it with ``$$.Map.Item.Index``
    so that errors name the row of the file (index + 1).
    """

    bucket: str
    key: str
    items: list[dict[str, Any]]
    model_version: str | None = None
    encoding: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Any) -> "MapBatch":
        """Validate the event's shape; a misrouted event is a BadRequest naming the field."""
        problems = []
        if not isinstance(event, dict):
            raise BadRequest("Not a Distributed Map batch: expected a JSON object.", [Problem("event", "must be an object")])
        items, batch = event.get("Items"), event.get("BatchInput")
        if not isinstance(items, list):
            problems.append(Problem("Items", "must be a list of {index, row} objects"))
        if not isinstance(batch, dict):
            problems.append(Problem("BatchInput", "must be an object with bucket and key"))
        else:
            for name in ("bucket", "key"):
                if not isinstance(batch.get(name), str) or not batch.get(name):
                    problems.append(Problem(f"BatchInput.{name}", "is required"))
        if isinstance(items, list):
            for i, item in enumerate(items):
                if not (isinstance(item, dict) and isinstance(item.get("index"), int)
                        and isinstance(item.get("row"), dict)):
                    problems.append(Problem(f"Items[{i}]", "must be {\"index\": <int>, \"row\": {...}}"))
                    break
        if problems:
            raise _not_a("Distributed Map batch", problems)
        return cls(batch["bucket"], batch["key"], items, batch.get("model_version"), batch.get("encoding"),
                   {k: v for k, v in batch.items() if k not in ("bucket", "key", "model_version", "encoding")})


def score_items(model: Model, batch: MapBatch, out: Blobs, tmp_dir: str | None = None) -> BatchResult:
    """Score one Distributed Map batch into ``outputs/<name>/part-<first row>.csv`` (+ errors)."""
    started = time.perf_counter()
    items = sorted(batch.items, key=lambda it: it["index"])
    first_row = items[0]["index"] + 1 if items else 1
    out_key, err_key = part_keys(batch.key, first_row)
    header = [str(h) for h in items[0]["row"]] if items else []
    job = _Job(model, header, tmp_dir or tempfile.gettempdir())
    try:
        if batch.model_version and batch.model_version != job.version:
            # the map pinned a version; a container serving another must not mix them in one run
            raise Refused(f"this batch was planned for model version {batch.model_version}, "
                          f"but {job.version} is being served")
        if items:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            width = len(header)
            rows, ragged = [], []
            for item in items:
                row = item["row"]
                ragged.append("" if list(row) == header else
                              f"has {len(row)} fields, the header has {width}")
                writer.writerow([_cell(row.get(h)) for h in header])
                rows.append(item["index"] + 1)
            data = buf.getvalue().encode("utf-8")
            job.write_chunk(data)
            # None when every row is well-shaped: 2,000 empty strings cost more to hand to R than the check
            res = job._score(first_row, rows, ragged if any(ragged) else None, True, len(rows), _triggers(data))
            if "fallback" in res:
                raise rsession.RError(f"R could not read a batch the csv module wrote: {res['fallback']}")
            rsession.collect_garbage()
        wrote_errors = _publish(job, out, out_key, err_key)
    finally:
        job.cleanup()
    result = BatchResult(out.uri(batch.key), out.uri(out_key), out.uri(err_key) if wrote_errors else None,
                         job.rows, job.scored, job.failed, job.version,
                         round(time.perf_counter() - started, 3), None, first_row)
    log.info("map batch scored", extra=result.summary())
    return result


def _cell(value: Any) -> str:
    # The CSV ItemReader gives strings; anything else (a hand-made event) as JSON would write it
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _not_a(what: str, problems: list[Problem]) -> BadRequest:
    """The BadRequest for an event that is not the ``what`` its shape claimed, naming each field."""
    return BadRequest(f"Not a {what}: " + "; ".join(f"{p.field} {p.problem}" for p in problems), problems)


def plan(request: Any, model: Model) -> dict[str, Any]:
    """A big-file run's plan: the CSV (bucket, key and the object version its event announced) and the model version.

    The state machine's Distributed Map reads that object version, so a key
    written again while the run is under way does not mix two files' rows;
    every batch then checks the model version (score_items).
    """
    problems = []
    if not isinstance(request, dict):
        raise BadRequest("Not a batch plan: expected a JSON object.", [Problem("Plan", "must be an object")])
    for name in ("bucket", "key", "version"):
        if not isinstance(request.get(name), str) or not request.get(name):
            problems.append(Problem(f"Plan.{name}", "is required (the S3 event's bucket, key and version-id)"))
    if problems:
        raise _not_a("batch plan", problems)
    return {"bucket": request["bucket"], "key": request["key"], "version": request["version"],
            "model_version": model_version(model)}


def collect(blobs: Blobs, source_key: str, manifest: str) -> dict[str, Any]:
    """Read a Map Run's ResultWriter ``manifest.json`` and write ``outputs/<name>.manifest.json``.

    The index lists every part and errors file in row order, the totals, the
    model version(s), and every batch that failed (its rows, error and
    cause); part files under ``outputs/<name>/`` that this run did not write
    (a stale earlier run's) are deleted, so the folder and the index agree.
    """
    doc = json.loads(blobs.get(manifest).data)
    parts: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for status, files in (doc.get("ResultFiles") or {}).items():
        for entry in files or []:
            try:
                records = json.loads(blobs.get(entry["Key"]).data)
            except BlobMissing:
                failures.append({"status": status, "error": "result file missing", "cause": entry["Key"]})
                continue
            for rec in records:
                if rec.get("Status") == "SUCCEEDED" and status == "SUCCEEDED":
                    output = rec.get("Output")
                    parts.append(json.loads(output) if isinstance(output, str) else output)
                else:
                    failures.append(_failed_batch(rec, status))
    parts.sort(key=lambda p: p.get("first_row", 0))
    listed = {_key_of(p["output"]) for p in parts} | {_key_of(p["errors_output"]) for p in parts if p.get("errors_output")}
    stale = [k for k in blobs.keys(f"outputs/{_stem(source_key)}/part-") if k not in listed]
    for k in stale:
        blobs.delete(k)
    index = {
        "source": blobs.uri(source_key),
        "map_run": doc.get("MapRunArn"),
        "rows": sum(p.get("rows", 0) for p in parts),
        "scored": sum(p.get("scored", 0) for p in parts),
        "failed": sum(p.get("failed", 0) for p in parts),
        "failed_batches": failures,
        "complete": not failures,
        "model_versions": sorted({p["model_version"] for p in parts if p.get("model_version")}),
        "parts": [p["output"] for p in parts],
        "errors": [p["errors_output"] for p in parts if p.get("errors_output")],
        "stale_parts_deleted": len(stale),
    }
    blobs.put(manifest_key(source_key), json.dumps(index, indent=1).encode(), "application/json")
    return {"manifest": blobs.uri(manifest_key(source_key)), **{k: index[k] for k in ("rows", "scored", "failed", "complete")}}


def _key_of(uri: str) -> str:
    # s3://bucket/outputs/x -> outputs/x ; file:///root/outputs/x -> outputs/x
    at = uri.find("/outputs/")
    return uri[at + 1:] if at >= 0 else uri


def _failed_batch(rec: dict[str, Any], status: str) -> dict[str, Any]:
    rows = None
    try:
        items = json.loads(rec.get("Input") or "{}").get("Items") or []
        idx = [it["index"] for it in items]
        rows = [min(idx) + 1, max(idx) + 1] if idx else None
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return {"status": rec.get("Status", status), "rows": rows, "error": rec.get("Error"),
            "cause": rec.get("Cause"), "execution": rec.get("ExecutionArn")}
