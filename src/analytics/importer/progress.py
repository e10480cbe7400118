"""Progress of one file: a tqdm bar on a terminal (bytes read, rows, rows/s, ETA), plain log
lines every few seconds otherwise (a cron job's or a container's log is not a terminal)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, label: str, total_bytes: int, *, out: TextIO = sys.stderr,
                 every_s: float = 5.0, bar: bool | None = None) -> None:
        self.label = label
        self.total = max(1, total_bytes)
        self.out = out
        self.every_s = every_s
        self.t0 = self.last = time.monotonic()
        self.rows = 0
        self.done_bytes = 0
        use_bar = out.isatty() if bar is None else bar
        self.bar = (tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                         file=out, dynamic_ncols=True, smoothing=0.1) if use_bar else None)

    def rate(self) -> float:
        return self.rows / max(1e-9, time.monotonic() - self.t0)

    def start_at(self, disk_bytes: int) -> None:
        """A resumed import: the part of the file before this is not this run's work."""
        self.base = self.done_bytes = disk_bytes
        if self.bar is not None:
            self.bar.reset(self.total)
            self.bar.update(disk_bytes)

    def update(self, disk_bytes: int, total_rows: int, run_rows: int) -> None:
        """`total_rows` read from the file so far (resumed runs included), `run_rows` by this run."""
        self.rows = run_rows
        if self.bar is not None:
            self.bar.update(max(0, disk_bytes - self.done_bytes))
            self.bar.set_postfix_str(f"{total_rows:,} rows, {self.rate():,.0f} rows/s", refresh=False)
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            base = getattr(self, "base", 0)
            frac = min(1.0, max(0, disk_bytes - base) / max(1, self.total - base))
            elapsed = self.last - self.t0
            eta = f"{elapsed * (1 - frac) / frac:.0f}s" if frac > 0 else "?"
            print(f"import {self.label}: {total_rows:,} rows, {self.rate():,.0f} rows/s, "
                  f"{min(1.0, disk_bytes / self.total):.0%} of the file, ETA {eta}", file=self.out, flush=True)
        self.done_bytes = max(self.done_bytes, disk_bytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
