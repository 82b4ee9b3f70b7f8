"""The device thread: the only thread that calls device methods.

Short tasks (show a map, grab a frame, read a status) and job steps share this one
thread, so devices never see concurrent calls. Between two job steps the worker
runs any pending short task: a status read or an abort waits for at most one step,
and the server loop keeps answering ``ping`` whatever the devices are doing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from labctl.server.jobs import FINISHED, Job

Task = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]


class DeviceWorker:
    def __init__(self, name: str = "labctl-devices", housekeeping: Callable[[bool], None] | None = None,
                 idle_s: float = 0.25):
        """``housekeeping(pending)`` runs in the device thread after every task or step, and every ``idle_s`` when idle."""
        self.housekeeping = housekeeping
        self.idle_s = idle_s
        self._tasks: deque[tuple[Task, Done]] = deque()
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._busy_since: float | None = None
        self._current: str | None = None
        self.last_work = time.monotonic()  # when a task or job step last ended (idle viewers' grabs wait for quiet)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, task: Task, done: Done, *, urgent: bool = False, label: str = "") -> None:
        """Run ``task`` in the device thread, then ``done(result, error)`` there too."""
        with self._cv:
            item = (task, done, label)
            if urgent:
                self._tasks.appendleft(item)  # type: ignore[arg-type]
            else:
                self._tasks.append(item)  # type: ignore[arg-type]
            self._cv.notify()

    def submit_job(self, job: Job) -> None:
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    @property
    def pending(self) -> int:
        """Short tasks waiting for the device thread."""
        return len(self._tasks)

    @property
    def busy(self) -> dict[str, Any] | None:
        """What the device thread is doing right now, and for how long (None when idle)."""
        since, what = self._busy_since, self._current
        if since is None:
            return None
        return {"what": what, "for_s": round(time.monotonic() - since, 3)}

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Cancel queued jobs, finish pending tasks, and join; False if the thread is still stuck in a device call."""
        with self._cv:
            self._stopping = True
            for job in self._jobs:
                job.cancel()
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _next(self) -> tuple[str, Any] | None:
        with self._cv:
            while True:
                while self._jobs and self._jobs[0].state in FINISHED:
                    self._jobs.popleft()
                if self._tasks:
                    return "task", self._tasks.popleft()
                if self._jobs:
                    return "job", self._jobs[0]
                if self._stopping:
                    return None
                if not self._cv.wait(self.idle_s) and self.housekeeping is not None:
                    return "idle", None

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            kind, payload = item
            if kind == "task":
                task, done, label = payload
                self._current = label or "task"
                self._busy_since = time.monotonic()
                try:
                    result, error = task(), None
                except BaseException as e:  # noqa: BLE001 - reported to the caller, the thread lives on
                    result, error = None, e
                try:
                    done(result, error)
                except Exception:  # noqa: BLE001 - a reply callback must not kill the device thread
                    pass
            elif kind == "job":
                job: Job = payload
                self._current = f"job {job.job_id} step {job.done_steps + 1}/{job.total}"
                self._busy_since = time.monotonic()
                if job.run_step():
                    job.cleanup()
            if kind != "idle":
                self.last_work = time.monotonic()
            self._busy_since = None
            self._current = None
            if self.housekeeping is not None:
                with self._cv:
                    pending = bool(self._tasks) or any(j.state not in FINISHED for j in self._jobs)
                try:
                    self.housekeeping(pending)
                except Exception:  # noqa: BLE001 - housekeeping is best effort
                    pass
