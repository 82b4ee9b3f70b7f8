"""Jobs: long bench work split into steps that run one by one in the device thread.

A job is a list of steps. Each step is a callable returning one record (a JSON
object) and optionally arrays; the job keeps every record so a client can page
through results while the job is still running. Cancelling takes effect between
steps; a step that raises fails the job with the error, and the next job runs
normally.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from labctl.protocol import NOT_FOUND, WireError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)

# A step returns its record, or (record, [arrays]).
StepResult = "dict[str, Any] | tuple[dict[str, Any], list[np.ndarray]]"
Step = Callable[[], Any]


@dataclass
class Job:
    kind: str
    owner: str
    steps: Sequence[Step]
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    arrays: list[list[np.ndarray]] = field(default_factory=list)
    on_finish: Callable[["Job"], None] | None = None
    arrays_released: bool = False
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def done_steps(self) -> int:
        return len(self.records)

    def cancel(self) -> bool:
        """Ask the job to stop before its next step; False if it had already finished."""
        with self._lock:
            if self.state in FINISHED:
                return False
            self._cancel.set()
            if self.state == QUEUED:
                self._finish(CANCELLED)
            return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def run_step(self) -> bool:
        """Run the next step in the calling (device) thread. Returns True when the job has finished."""
        with self._lock:
            if self.state in FINISHED:
                return True
            if self._cancel.is_set():
                self._finish(CANCELLED)
                return True
            if self.state == QUEUED:
                self.state = RUNNING
                self.started = time.time()
            index = len(self.records)
            if index >= len(self.steps):
                self._finish(DONE)
                return True
        try:
            out = self.steps[index]()
        except Exception as e:  # noqa: BLE001 - any step error fails this job only
            from labctl.server.ops import error_from_exception

            err = error_from_exception(e)
            with self._lock:
                self.error = {**err.to_dict(), "step": index}
                self._finish(FAILED)
            return True
        record, arrays = out if isinstance(out, tuple) else (out, [])
        with self._lock:
            self.records.append(record)
            self.arrays.append(list(arrays))
            if len(self.records) == len(self.steps):
                self._finish(DONE)
                return True
        return False

    def _finish(self, state: str) -> None:
        self.state = state
        self.finished = time.time()

    def cleanup(self) -> None:
        """Run the job's cleanup hook (device thread only, after the job's last step)."""
        if self.on_finish is not None:
            try:
                self.on_finish(self)
            except Exception:  # noqa: BLE001 - a cleanup hook must not take the device thread down
                pass

    def release_arrays(self) -> None:
        """Forget the job's frames (records stay) to bound the server's memory."""
        with self._lock:
            if any(self.arrays):
                self.arrays = [[] for _ in self.arrays]
                self.arrays_released = True

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "job": self.job_id,
                "kind": self.kind,
                "owner": self.owner,
                "state": self.state,
                "done": len(self.records),
                "total": len(self.steps),
                "created_unix": self.created,
                "started_unix": self.started,
                "finished_unix": self.finished,
                "error": self.error,
            }

    def page(self, offset: int, limit: int) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Records [offset, offset+limit) with their arrays; each record says which buffers are its own."""
        with self._lock:
            records = self.records[offset: offset + limit]
            arrays = self.arrays[offset: offset + limit]
            state, done = self.state, len(self.records)
        out_records, buffers = [], []
        for rec, arrs in zip(records, arrays):
            rec = dict(rec)
            rec["buffers"] = list(range(len(buffers), len(buffers) + len(arrs)))
            buffers.extend(arrs)
            out_records.append(rec)
        result = {
            "job": self.job_id,
            "state": state,
            "offset": offset,
            "next_offset": offset + len(out_records),
            "done": done,
            "total": self.total,
            "records": out_records,
            "error": self.error,
            "frames_released": self.arrays_released,
        }
        return result, buffers


class JobTable:
    """Every job the server knows: active ones plus the most recent finished ones."""

    def __init__(self, keep_finished: int = 32, keep_frames: int = 4):
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep = keep_finished
        self._keep_frames = keep_frames
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.job_id] = job
            finished = [j for j in self._jobs.values() if j.state in FINISHED]
            for old in finished[: max(0, len(finished) - self._keep)]:
                del self._jobs[old.job_id]
            # frames are the heavy part: only the newest few finished jobs keep theirs
            finished = [j for j in self._jobs.values() if j.state in FINISHED]
            for old in finished[: max(0, len(finished) - self._keep_frames)]:
                old.release_arrays()

    def get(self, job_id: Any) -> Job:
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise WireError(NOT_FOUND, f"no job {job_id!r:.40} on this server (finished jobs are kept for the last {self._keep})")
        return job

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def active(self) -> list[Job]:
        return [j for j in self.all() if j.state not in FINISHED]
