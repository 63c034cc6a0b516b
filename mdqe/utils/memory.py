"""Process memory of the benchmarks: resident set size and its peak, from Linux's /proc/self/status.

The one implementation the benchmark scripts share (no torch).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from pathlib import Path

__all__ = ["PeakRSS", "process_memory_kib", "reset_peak_rss"]

_STATUS = Path("/proc/self/status")


def process_memory_kib(field: str = "VmRSS") -> int | None:
    """A memory field of /proc/self/status in KiB ("VmRSS": resident now, "VmHWM": its peak), or None
    where the file or the field does not exist (not Linux)."""
    if not _STATUS.exists():
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else None


def reset_peak_rss() -> None:
    """Return freed heap to the OS (glibc's malloc_trim), then restart the peak (VmHWM) from the current
    RSS (Linux >= 4.0). Without the trim, memory that earlier work freed but malloc kept would hide the
    next block's own peak. Does nothing where either is unavailable."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class PeakRSS:
    """The peak RSS of the enclosed block and its excess over the RSS at the start (None off Linux).

    Attributes (after the block): baseline_kib, peak_kib, extra_bytes.
    """

    def __enter__(self) -> PeakRSS:
        reset_peak_rss()
        self.baseline_kib = process_memory_kib("VmRSS")
        self.peak_kib: int | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kib = process_memory_kib("VmHWM")

    @property
    def extra_bytes(self) -> int | None:
        if self.baseline_kib is None or self.peak_kib is None:
            return None
        return (self.peak_kib - self.baseline_kib) * 1024
