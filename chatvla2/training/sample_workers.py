"""Training batches computed ahead of the trainer in worker processes: `BatchPrefetcher`.

    with BatchPrefetcher(mixture, seed, batch_size=8, start_step=step, workers=1) as batches:
        step, examples, wait_seconds = batches.next()     # steps start_step, start_step + 1, ... in order

Each batch is exactly scene_stream.step_examples(mixture, seed, step, batch_size): where and when it
was computed changes nothing, so a resumed run draws what an uninterrupted one would. Workers are
processes, not threads: drawing a sample is Python, numpy and Pillow, which hold the GIL, and the
trainer's step would wait on them. They are spawned (a fresh interpreter: no copy of the trainer's
model or threads), daemonic, ignore Ctrl-C (the trainer handles it and closes them), stop when the
trainer's process is gone, and use one thread each: the 2-core machine this runs on has one core
for the trainer and one for a worker. `wait_seconds` is how long next() blocked, so the trainer can
log its utilisation, compute / (compute + wait). workers=0 draws in the calling process (tests,
debugging); next() then waits for the whole draw. A spawned worker first imports the trainer's main
module, so a script that starts workers needs the `if __name__ == "__main__":` guard (the console
script and `python -m chatvla2` have it).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sys
import time
import traceback
import weakref
from typing import TYPE_CHECKING

from chatvla2.contract.errors import InvalidInput

if TYPE_CHECKING:  # the worker imports scene_stream (and with it torch) only after limiting its threads
    from chatvla2.models.training_batch import Example
    from chatvla2.training.scene_stream import Mixture

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
POLL_S = 0.5  # how often a blocked worker or trainer looks whether the other side is still there
JOIN_S = 5.0  # how long close() lets workers finish their sample before it terminates them


class WorkerFailed(RuntimeError):
    """A worker raised (its traceback is in the message) or died."""


def _worker(payload: bytes, tasks, results, stop) -> None:
    """Draw the batches of the steps that arrive on `tasks` until `stop` is set or the trainer is gone."""
    for name in THREAD_VARIABLES:  # before the payload imports torch and numpy (unless __main__ already did)
        os.environ[name] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the trainer handles it
    import torch

    torch.set_num_threads(1)
    from chatvla2.training.scene_stream import sample

    mixture, seed, batch_size, sources = pickle.loads(payload)
    parent = multiprocessing.parent_process()
    while not stop.is_set():
        try:
            step = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                break
            continue
        if step is None:
            break
        try:
            examples = []
            for slot in range(batch_size):
                if stop.is_set():
                    break
                examples.append(sample(mixture, seed, step, slot, sources))
            else:
                results.put((step, examples, None))
        except Exception:
            results.put((step, None, traceback.format_exc()))
    results.cancel_join_thread()  # the trainer no longer reads: never wait to flush what it will not take
    # Leave at once: an orderly interpreter shutdown (torch's teardown) takes ~0.4 s that close() would wait.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_workers(workers: list, tasks, results, stop) -> None:
    """Stop, join and (if they hang) terminate the workers; idempotent through weakref.finalize."""
    stop.set()
    workers = [process for process in workers if process.pid is not None]  # a failed start leaves some unstarted
    for _ in workers:
        tasks.put(None)  # wakes a worker blocked on an empty queue
    deadline = time.monotonic() + JOIN_S
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in workers:
        if process.is_alive():
            process.terminate()
            process.join(JOIN_S)
        if process.is_alive():
            process.kill()
            process.join()
    for channel in (tasks, results):
        channel.cancel_join_thread()
        channel.close()


class BatchPrefetcher:
    """The batches of steps start_step, start_step + 1, ... (up to end_step, exclusive, if given), drawn
    `prefetch` steps ahead by `workers` processes. A context manager; close() stops the workers."""

    def __init__(
        self,
        mixture: Mixture,
        seed: int,
        batch_size: int,
        start_step: int = 0,
        workers: int = 1,
        prefetch: int = 4,
        end_step: int | None = None,
    ) -> None:
        from chatvla2.training.scene_stream import SOURCES

        given = {"seed": (seed, 0), "batch_size": (batch_size, 1), "start_step": (start_step, 0), "workers": (workers, 0)}
        for name, (value, least) in (given | {"prefetch": (prefetch, 1)}).items():
            if value < least:
                raise InvalidInput(f"batch prefetcher: {name} must be at least {least}, got {value}")
        if end_step is not None and end_step < start_step:
            raise InvalidInput(f"batch prefetcher: end_step {end_step} is before start_step {start_step}")
        self.mixture, self.seed, self.batch_size = mixture, int(seed), int(batch_size)
        self.end_step = end_step
        self.prefetch = int(prefetch)
        # The sources as they are now: a worker process imports scene_stream afresh and would not see
        # sources registered since, so it gets them (module-level functions, pickled by name) from here.
        self.sources = {name: SOURCES[name] for name in mixture.sources}
        self.total_wait_seconds = 0.0
        self._next_step = self._submitted = int(start_step)
        self._ready: dict[int, list[Example]] = {}
        self._workers: list = []
        self._closed = False
        if workers == 0:
            self._finalizer = None
            return
        try:
            payload = pickle.dumps((mixture, self.seed, self.batch_size, self.sources))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise InvalidInput(
                f"batch prefetcher: a source cannot go to a worker process (register a module-level function): {exc}"
            ) from None
        context = multiprocessing.get_context("spawn")
        self._tasks, self._results, self._stop = context.Queue(), context.Queue(), context.Event()
        self._workers = [
            context.Process(target=_worker, args=(payload, self._tasks, self._results, self._stop), name=f"sample-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        # Registered before the first start: a failed start still stops the ones already running.
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers, self._tasks, self._results, self._stop)
        try:
            for process in self._workers:
                process.start()
            self._submit()
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process in self._workers if process.pid is not None)

    def _submit(self) -> None:
        """Keep the `prefetch` steps from the next one on queued, in progress or ready."""
        last = self._next_step + self.prefetch
        if self.end_step is not None:
            last = min(last, self.end_step)
        while self._submitted < last:
            self._tasks.put(self._submitted)
            self._submitted += 1

    def _receive(self) -> None:
        try:
            step, examples, error = self._results.get(timeout=POLL_S)
        except queue.Empty:
            for process in self._workers:
                if not process.is_alive():
                    raise WorkerFailed(f"{process.name} exited (code {process.exitcode}) before drawing its batch") from None
            return
        if error is not None:
            raise WorkerFailed(f"{self._workers[0].name if len(self._workers) == 1 else 'a sample worker'} failed on step {step}:\n{error}")
        self._ready[step] = examples

    def next(self) -> tuple[int, list[Example], float]:
        """(step, its examples, seconds this call waited); StopIteration after end_step - 1."""
        if self._closed:
            raise RuntimeError("the batch prefetcher is closed")
        step = self._next_step
        if self.end_step is not None and step >= self.end_step:
            raise StopIteration
        started = time.perf_counter()
        if not self._workers:
            from chatvla2.training.scene_stream import step_examples

            examples = step_examples(self.mixture, self.seed, step, self.batch_size, self.sources)
        else:
            while step not in self._ready:
                self._receive()
            examples = self._ready.pop(step)
        waited = time.perf_counter() - started
        self.total_wait_seconds += waited
        self._next_step += 1
        if self._workers:
            self._submit()
        return step, examples, waited

    __next__ = next

    def __iter__(self) -> BatchPrefetcher:
        return self

    def close(self) -> None:
        """Stop the workers (a sample in progress may finish; after JOIN_S they are terminated)."""
        self._closed = True
        self._ready.clear()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
