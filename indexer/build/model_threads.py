"""How many CPU threads a CPU model takes while decoding worker processes share its cores.

When decoding is the bottleneck (a light model), the model's threads only fight the decoders for the
cores: torch's threads wait for each other at every layer, and a thread descheduled for a decoder holds
the others up while they spin. Measured on 2 cores, tiny model, 2 decoding workers: 270-340 images/s
with torch's 2 threads, 370-460 with 1 (bench/bench_throughput.py). When the model is the bottleneck
(any real CLIP on a CPU), the decoders are mostly idle and the model keeps every thread.
"""
from __future__ import annotations

import os
import sys
from typing import Callable


class ModelThreads:
    """Watches each batch: waiting on the decoders longer than encoding takes means decode-bound, and the
    model gives up the threads the decoders use; waiting far less means model-bound, and it takes them back.
    The gap between the two thresholds keeps it from switching at every batch."""

    def __init__(self, get_threads: Callable[[], int], set_threads: Callable[[int], None], workers: int,
                 cores: int | None = None):
        self._set = set_threads
        self.full = get_threads()
        self.reduced = max(1, min(self.full, (cores or os.cpu_count() or 1) - workers))
        self.current = self.full

    def after_batch(self, waited: float, encoding: float) -> None:
        """`waited`: seconds spent waiting on decoded images for this batch; `encoding`: encoding it."""
        if self.current == self.full and waited > encoding:
            self._use(self.reduced)
        elif self.current == self.reduced and waited < encoding / 4:
            self._use(self.full)

    def restore(self) -> None:
        self._use(self.full)

    def _use(self, threads: int) -> None:
        if threads != self.current:
            self._set(threads)
            self.current = threads


def for_cpu_model(encoder, workers: int) -> ModelThreads | None:
    """A ModelThreads for a torch model on the CPU beside `workers` decoding processes; None where there is
    nothing to share (no workers, a GPU model, an encoder that does not run on torch)."""
    torch = sys.modules.get("torch")  # an encoder on torch has imported it; importing it here would cost seconds
    if torch is None or workers <= 0 or str(getattr(encoder, "device", "cpu")) != "cpu":
        return None
    threads = ModelThreads(torch.get_num_threads, torch.set_num_threads, workers)
    return threads if threads.reduced < threads.full else None
