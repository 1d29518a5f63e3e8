"""Peak resident memory of this process, shared by the benchmarks."""

from __future__ import annotations

import threading

import psutil


class PeakRSS:
    """Samples the process's resident memory in a thread: torch allocations are invisible to tracemalloc."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.peak = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
