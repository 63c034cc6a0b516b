"""What the fuzz tests share: the budget, JSON mutations of a valid file, and the contract every reader of a
stranger's file must keep on each drawn case.

The budget is MDQE_FUZZ_EXAMPLES cases per test (default 200: about a second each, the whole folder well
under a minute); a longer run is one command, e.g.

    MDQE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/fuzz

Cases are drawn deterministically (derandomize), so CI sees the same ones on every run; MDQE_FUZZ_SEED=<n>
draws another fixed set instead (for long runs).

The contract (`bounded`): a case ends with a valid result or the project's own clear error, within
CASE_SECONDS and CASE_PEAK_BYTES of traced allocations, writing no file.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("MDQE_FUZZ_EXAMPLES", "200"))
_SEED = os.environ.get("MDQE_FUZZ_SEED")
CASE_SECONDS = 20.0  # a hang, not a slow case on a loaded machine (cases take milliseconds)
CASE_PEAK_BYTES = 64 << 20  # inputs are kilobytes: more means an allocation driven by the input

_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=_SEED is None,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def fuzz(test: Callable) -> Callable:
    """The fuzz budget and seed for a `@given` test."""
    test = _SETTINGS(test)
    return test if _SEED is None else seed(int(_SEED))(test)


# ---- values -----------------------------------------------------------------------------------------

_NUMBERS = (
    st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63, 10**12])
    | st.floats(allow_nan=True, allow_infinity=True)
)
_TEXT = st.text(max_size=12) | st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=16)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: Callable, base: Any, max_changes: int = 3) -> Any:
    """`base` (json-like) with up to `max_changes` values replaced, removed or added at random places."""
    import copy

    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_changes))):
        parent, key = None, None
        node = value
        for _ in range(draw(st.integers(1, 7))):  # how deep the change is (the root is left alone)
            if not isinstance(node, (dict, list)) or not node:
                break
            key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
            parent, node = node, node[key]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if parent is None:
            continue
        if action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "remove":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(_TEXT)] = draw(JSON_VALUES)
        else:
            parent.insert(key, draw(JSON_VALUES))
    return value


@st.composite
def mutated_bytes(draw: Callable, base: bytes) -> bytes:
    """`base` truncated, with bytes overwritten or inserted, or replaced by random bytes."""
    data = bytearray(base)
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if kind == "overwrite":
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = chunk
    return bytes(data)


def json_text(value: Any) -> str:
    """`value` as json, non-finite floats included (as Python writes them: NaN, Infinity)."""
    import json

    return json.dumps(value, allow_nan=True)


# ---- the contract -----------------------------------------------------------------------------------


class Hang(Exception):
    """A case ran past CASE_SECONDS."""


@contextmanager
def _alarm(seconds: float):
    def ring(signum, frame):
        raise Hang(f"the case ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def scratch_folder(tmp_path: Path) -> Path:
    """A new folder for one case (hypothesis runs every case of a test in the same `tmp_path`)."""
    import tempfile

    return Path(tempfile.mkdtemp(dir=tmp_path))


def bounded(
    call: Callable[[], Any],
    scratch: Path,
    accepted: tuple[type[BaseException], ...] = (),
    writes: frozenset[str] = frozenset(),
) -> Any:
    """Run one case: its value, or the accepted exception it raised. Fails the test on any other
    exception, a hang, a traced allocation peak past CASE_PEAK_BYTES or a file written in `scratch`
    other than `writes` (paths relative to it)."""
    before = _files(scratch)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with _alarm(CASE_SECONDS):
            try:
                value = call()
            except accepted as e:
                value = e
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= CASE_PEAK_BYTES, f"the case allocated {peak:,} bytes"
    written = _files(scratch) - before
    assert written <= writes and before <= _files(scratch), f"the case wrote {sorted(written - writes)}"
    assert time.perf_counter() - start < CASE_SECONDS
    return value


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


def outcome(value: Any) -> str:
    """A label of a case's outcome for hypothesis' statistics (`pytest --hypothesis-show-statistics`)."""
    if isinstance(value, BaseException):
        words = str(value).split(": ")[-1].split()[:4]
        return f"{type(value).__name__}: {' '.join(words)}"
    return "accepted"
