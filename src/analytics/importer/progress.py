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

    def update(self, disk_bytes: int, rows: int) -> None:
        self.rows = rows
        if self.bar is not None:
            self.bar.update(max(0, disk_bytes - self.done_bytes))
            self.bar.set_postfix_str(f"{rows:,} rows, {self.rate():,.0f} rows/s", refresh=False)
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            frac = min(1.0, disk_bytes / self.total)
            elapsed = self.last - self.t0
            eta = f"{elapsed * (1 - frac) / frac:.0f}s" if frac > 0 else "?"
            print(f"import {self.label}: {rows:,} rows, {self.rate():,.0f} rows/s, {frac:.0%} of the file, "
                  f"ETA {eta}", file=self.out, flush=True)
        self.done_bytes = max(self.done_bytes, disk_bytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
