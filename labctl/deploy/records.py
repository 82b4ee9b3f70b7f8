"""A run folder (DESIGN §5): ``run.json``, ``records.jsonl``, example frames, the report.

``records.jsonl`` is append-only: one JSON line per image, written, flushed and
fsynced before the next image is looked at, so a killed run keeps every image it
had reported. A line cut short by a kill (no final newline, or not JSON) is the
only damage possible; reading the folder drops it, and resuming truncates it away.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from labctl.errors import UsageError
from sims.io import write_json_atomic, write_npz_atomic

RUN_SCHEMA = "labctl.run/1"
RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
EXAMPLES_FILE = "examples.npz"
RECORD_KEYS = ("index", "label", "captured", "twin", "pred_captured", "pred_twin", "crc32")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(model_name: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-") or "model"
    return f"{stamp}-{safe}"


@dataclass
class LoadedRecords:
    records: list[dict[str, Any]]  # in file order, one per index
    good_bytes: int  # length of the file up to the last complete, valid line
    dropped_tail: bool  # a partial last line was found
    duplicates: int  # lines repeating an index already seen (kept: the first)


def read_records(path: Path) -> LoadedRecords:
    """Every complete record line of ``path`` (missing file: none)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return LoadedRecords([], 0, False, 0)
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    good, duplicates, pos = 0, 0, 0
    dropped = False
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            dropped = True  # the process died inside this write
            break
        line = raw[pos:end]
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not all(k in rec for k in RECORD_KEYS):
                raise ValueError
            index = int(rec["index"])
        except ValueError:
            if raw.find(b"\n", end + 1) >= 0:
                raise UsageError(f"{path}: line {len(records) + duplicates + 1} is not a run record; "
                                 "the file was edited or is not a labctl run") from None
            dropped = True
            break
        if index in seen:
            duplicates += 1
        else:
            seen.add(index)
            records.append(rec)
        pos = end + 1
        good = pos
    return LoadedRecords(records, good, dropped, duplicates)


class RunDir:
    """One deploy run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._records_file: Any = None

    # -- run.json ----------------------------------------------------------------

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def records_file(self) -> Path:
        return self.path / RECORDS_FILE

    @property
    def examples_file(self) -> Path:
        return self.path / EXAMPLES_FILE

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.run_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{self.path}: no {RUN_FILE}; expected a run folder written by `labctl deploy`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"{self.run_file}: not a readable run file ({e})") from None
        if not isinstance(meta, dict) or meta.get("schema") != RUN_SCHEMA:
            raise UsageError(f"{self.run_file}: schema is not {RUN_SCHEMA!r}")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json_atomic(self.run_file, meta)

    # -- records -----------------------------------------------------------------

    def load_records(self) -> LoadedRecords:
        return read_records(self.records_file)

    def open_for_append(self) -> LoadedRecords:
        """Load the records and open the file for appending, cutting off a partial last line."""
        self.path.mkdir(parents=True, exist_ok=True)
        loaded = self.load_records()
        if loaded.duplicates:
            raise UsageError(f"{self.records_file}: {loaded.duplicates} duplicated image records; "
                             "this run folder was edited by hand and cannot be resumed")
        f = open(self.records_file, "ab")
        if f.tell() != loaded.good_bytes:
            f.truncate(loaded.good_bytes)
            f.seek(loaded.good_bytes)
        self._records_file = f
        return loaded

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make it durable before returning."""
        assert self._records_file is not None, "open_for_append first"
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        self._records_file.write(line.encode("utf-8"))
        self._records_file.flush()
        os.fsync(self._records_file.fileno())

    def close(self) -> None:
        if self._records_file is not None:
            self._records_file.close()
            self._records_file = None

    # -- example frames ------------------------------------------------------------

    def write_examples(self, indices: Iterable[int], frames: Iterable[np.ndarray], regions: list) -> None:
        arrays = {"indices": np.asarray(list(indices), dtype=np.int64),
                  "regions": np.asarray(regions, dtype=np.int64).reshape(-1, 4)}
        for k, frame in enumerate(frames):
            arrays[f"frame_{k}"] = np.asarray(frame, dtype=np.float32)
        write_npz_atomic(self.examples_file, arrays)

    def read_examples(self) -> tuple[list[int], list[np.ndarray], np.ndarray] | None:
        if not self.examples_file.is_file():
            return None
        try:
            with np.load(self.examples_file, allow_pickle=False) as z:
                indices = [int(i) for i in z["indices"]]
                frames = [z[f"frame_{k}"] for k in range(len(indices))]
                regions = z["regions"]
        except (OSError, KeyError, ValueError) as e:
            raise UsageError(f"{self.examples_file}: unreadable example frames ({e})") from None
        return indices, frames, regions
