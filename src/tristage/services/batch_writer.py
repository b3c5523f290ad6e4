"""Group commit for the state store: writes run on one thread, and jobs queued
together share one transaction, so an asyncio loop never blocks on the database and
concurrent requests never contend for SQLite's write lock inside the process.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..edges.store import Store

log = logging.getLogger("tristage.webhooks")

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("fn", "fut", "loop")

    def __init__(
        self,
        fn: Callable[[Store], T],
        fut: asyncio.Future[T] | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.fn = fn
        self.fut = fut
        self.loop = loop


def _resolve(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class BatchWriter:
    """Runs store writes on one thread; jobs queued together share one transaction.

    A job's future resolves only after its transaction committed. If a batch fails,
    its jobs are retried one by one so one bad job fails alone.
    """

    MAX_BATCH = 256

    def __init__(self, store: Store) -> None:
        self.store = store
        self._q: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # held while a batch (or a loop's batch) is written
        self._here: list[_Job[Any]] = []  # gathered on the event loop (run_here)

    def _ensure(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="tristage-webhook-writer", daemon=True
                    )
                    self._thread.start()

    async def run(self, fn: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._ensure()
        self._q.put(_Job(fn, fut, loop))
        return await fut

    async def run_here(self, fn: Callable[[Store], T]) -> T:
        """Like `run`, but committed on the calling event loop when that costs no
        waiting: the jobs of one turn of the loop (requests that arrived together) are
        gathered and committed in one transaction right after it, when nothing is queued
        for or being written by the writer thread and the store's write lock is free.
        Otherwise they go to the writer thread. A lone request then pays no hand-over
        to the writer's thread and back, which on a busy machine is most of its time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self._here:
            loop.call_soon(self._flush_here, loop)
        self._here.append(_Job(fn, fut, loop))
        return await fut

    def _flush_here(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._here = self._here[: self.MAX_BATCH], self._here[self.MAX_BATCH :]
        if self._here:
            loop.call_soon(self._flush_here, loop)
        results: list[Any] = []
        done = False
        if self._q.empty() and self._writing.acquire(blocking=False):
            try:
                with self.store.transaction(wait=False):
                    results = [job.fn(self.store) for job in batch]
                done = True
            except BaseException:  # busy, or a job failed: the writer retries them one by one
                done = False
            finally:
                self._writing.release()
        if not done:
            self._ensure()
            for job in batch:
                self._q.put(job)
            return
        for job, value in zip(batch, results, strict=True):
            if job.fut is not None and not job.fut.done():
                job.fut.set_result(value)

    def submit(self, fn: Callable[[Store], object]) -> None:
        """Fire and forget (counters)."""
        self._ensure()
        self._q.put(_Job(fn, None, None))

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        with self._writing:
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Job[Any]]) -> None:
        results: list[Any] = []
        try:
            with self.store.transaction():
                for job in batch:
                    results.append(job.fn(self.store))
        except BaseException:
            if len(batch) == 1:
                self._finish(batch[0], None, _current_exc())
                return
            for job in batch:
                try:
                    with self.store.transaction():
                        value = job.fn(self.store)
                except BaseException as exc:
                    self._finish(job, None, exc)
                else:
                    self._finish(job, value, None)
            return
        for job, value in zip(batch, results, strict=True):
            self._finish(job, value, None)

    @staticmethod
    def _finish(job: _Job[Any], value: Any, exc: BaseException | None) -> None:
        if exc is not None and job.fut is None:
            log.error("webhook store write failed: %s", exc)
        if job.fut is None or job.loop is None:
            return
        try:
            job.loop.call_soon_threadsafe(_resolve, job.fut, value, exc)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _current_exc() -> BaseException:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return exc
