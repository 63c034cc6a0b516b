"""The steps of the GPU check, their table rows, timeouts and process environments. Torch-free.

Each step runs in its own process (`mdqe.benchmark.gpu_check.worker`) with its own timeout, so that a
crash, a hung kernel or a poisoned CUDA context ends that step only. The steps that time one
deformable-attention backend (cuda: the CUDA kernel of mdqe._C, triton, pytorch: the grid_sample
reference) run with MDQE_MSDA_BACKEND set to it in their process's environment; the others with `auto`.

STEPS is the order they run in: the most valuable figures first, in case the budget runs out. The op
timings of triton and pytorch and R50_ovis_360 with Triton (`model_triton`: whole-video inference, then
training) need no build, so they run before `build` (which may take minutes); then the CUDA kernel's op
timings, R50_ovis_360 with it and with grid_sample, `pytest -m gpu`, and Swin-L inference last. A step
that runs out of time keeps the rows it finished (inference before training). TABLE is the order of the
rows in the table, which puts the backends of one figure side by side.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .op_shapes import op_shapes

__all__ = [
    "BACKENDS",
    "INSTALL_ROWS",
    "STEPS",
    "TABLE",
    "MeasurementErrors",
    "Rows",
    "Step",
    "StepContext",
    "inference_labels",
    "op_labels",
    "step_environment",
    "training_labels",
]

Rows = list[tuple[str, str]]

# values of MDQE_MSDA_BACKEND timed one by one (mdqe.layers.msda_backend)
BACKENDS = ("cuda", "triton", "pytorch")
OP_DTYPES = ("fp32", "bf16")
OP_MODES = ("forward", "forward+backward")
PRECISIONS = ("fp32", "AMP")
R50 = "R50_ovis_360"
SWINL = "swinl_ovis"
INSTALL_ROWS = ("offline install of the bundle",)
_PACKAGE = __package__
_SHAPE_NAMES = tuple(shape.name for shape in op_shapes(dry_run=False))


@dataclass(frozen=True)
class StepContext:
    """What every step function receives: the mode and the offline bundle's folder."""

    dry_run: bool
    bundle: Path


@dataclass(frozen=True)
class Step:
    """One step: `target` ("package.module:function") is called as `function(ctx, **kwargs)` and
    yields lists of (label, value) rows, all of them among `rows`, within `timeout` seconds. Its process
    runs with MDQE_MSDA_BACKEND=`backend`, and with MDQE_LIGHT_IMPORT=1 where `light_import` (the step
    needs nothing of mdqe that imports detectron2: it starts faster, and runs where detectron2 fails)."""

    name: str
    target: str
    rows: tuple[str, ...]
    timeout: float
    backend: str = "auto"
    kwargs: dict[str, Any] = field(default_factory=dict)
    light_import: bool = False


class MeasurementErrors:
    """The errors of a step's measurements, so that one failing measurement (an AMP run, one dtype of a
    kernel) does not cost the step's other rows: its rows say "FAILED: <error>", its traceback goes to the
    step's log, and `check` fails the step once every measurement has run."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def failed(self, labels: tuple[str, ...] | list[str], error: Exception) -> Rows:
        """The rows `labels` of a measurement that raised `error` (call it in the `except` block)."""
        traceback.print_exc(file=sys.stderr)
        message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        self.messages.append(message)
        return [(label, f"FAILED: {message}") for label in labels]

    def check(self) -> None:
        """Raise if a measurement failed (the step's process then exits with an error)."""
        if self.messages:
            raise RuntimeError(f"{len(self.messages)} measurement(s) failed, the first: {self.messages[0]}")


def op_labels(backend: str, shape: str, dtype: str) -> dict[str, str]:
    """The op rows of one backend, shape and dtype: {"forward": label, "forward+backward": label,
    "diff": label}."""
    prefix = f"ms_deform_attn {shape} {dtype}"
    labels = {mode: f"{prefix} {mode}: {backend} ms" for mode in OP_MODES}
    labels["diff"] = f"{prefix}: {backend} max abs diff vs fp64 reference"
    return labels


def inference_labels(config: str, precision: str, backend: str | None) -> tuple[str, str]:
    """(FPS label, peak memory label) of whole-video inference; backend None: `auto`'s choice."""
    prefix = f"inference {config} {precision}" + (f" {backend}" if backend else "")
    return f"{prefix}: FPS", f"{prefix}: peak memory"


def training_labels(precision: str, backend: str) -> tuple[str, str]:
    """(s/iteration label, peak memory label) of R50_ovis_360 training iterations."""
    prefix = f"training {R50} {precision} {backend}"
    return f"{prefix}: s/iteration", f"{prefix}: peak memory"


def _op_rows(backend: str) -> tuple[str, ...]:
    """In the order `msda_steps.op_step` measures them: fp32 first."""
    return tuple(
        label
        for dtype in OP_DTYPES
        for shape in _SHAPE_NAMES
        for label in op_labels(backend, shape, dtype).values()
    )


def _inference_rows(config: str, backend: str | None) -> tuple[str, ...]:
    return tuple(label for p in PRECISIONS for label in inference_labels(config, p, backend))


def _training_rows(backend: str) -> tuple[str, ...]:
    return tuple(label for p in PRECISIONS for label in training_labels(p, backend))


def _steps() -> dict[str, Step]:
    env_rows = (
        "GPU",
        "GPU driver",
        "CUDA (torch) / nvcc",
        "torch / triton",
        "Python / numpy / Pillow",
        "commit",
        "ms_deform_attn shapes",
    )
    build_rows = ("build mdqe._C (CUDA)", "mdqe._C has CUDA")
    op_timeouts = {"cuda": 60, "triton": 90, "pytorch": 60}  # triton: its first compilations included
    op = {
        b: Step(
            f"op_{b}",
            _PACKAGE + ".msda_steps:op_step",
            _op_rows(b),
            op_timeouts[b],
            backend=b,
            kwargs={"backend": b},
            light_import=True,
        )
        for b in BACKENDS
    }
    model = {
        b: Step(
            f"model_{b}",
            _PACKAGE + ".model_steps:inference_and_training_step",
            _inference_rows(R50, b) + _training_rows(b),
            180,
            backend=b,
            kwargs={"backend": b},
        )
        for b in BACKENDS
    }
    steps = [
        Step("env", _PACKAGE + ".system_steps:env_step", env_rows, 60, light_import=True),
        op["triton"],
        op["pytorch"],
        model["triton"],
        Step("build", _PACKAGE + ".system_steps:build_step", build_rows, 300, light_import=True),
        op["cuda"],
        model["cuda"],
        model["pytorch"],
        Step("tests", _PACKAGE + ".system_steps:tests_step", ("pytest -m gpu",), 180),
        Step(
            "inference_swinl",
            _PACKAGE + ".model_steps:inference_step",
            _inference_rows(SWINL, None),
            120,
            kwargs={"config": SWINL, "backend": None},
        ),
    ]
    return {step.name: step for step in steps}


STEPS: dict[str, Step] = _steps()


def _table() -> tuple[tuple[str, str], ...]:
    def rows_of(name: str) -> list[tuple[str, str]]:
        return [(name, label) for label in STEPS[name].rows]

    table = [*rows_of("env"), *(("install", label) for label in INSTALL_ROWS), *rows_of("build")]
    table += rows_of("tests")
    for shape in _SHAPE_NAMES:
        for dtype in OP_DTYPES:
            for key in (*OP_MODES, "diff"):
                table += [(f"op_{b}", op_labels(b, shape, dtype)[key]) for b in BACKENDS]
    for backend in BACKENDS:
        table += [(f"model_{backend}", label) for label in _inference_rows(R50, backend)]
    table += rows_of("inference_swinl")
    for backend in BACKENDS:
        table += [(f"model_{backend}", label) for label in _training_rows(backend)]
    return tuple(table)


TABLE: tuple[tuple[str, str], ...] = _table()


def step_environment(step: Step, base: dict[str, str], dry_run: bool) -> dict[str, str]:
    """The environment of `step`'s process, from `base`: MDQE_MSDA_BACKEND set to its backend; Triton's
    interpreter on (dry run: the Triton steps run on CPU tensors) or off (a GPU run compiles the kernels);
    one CPU thread in the dry run;
    MDQE_LIGHT_IMPORT=1 where the step asks for it (`Step.light_import`), else unset."""
    env = {k: v for k, v in base.items() if k not in ("TRITON_INTERPRET", "MDQE_LIGHT_IMPORT")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MDQE_MSDA_BACKEND"] = step.backend
    if dry_run:
        env["TRITON_INTERPRET"] = "1"
        # tiny sizes: more threads only add overhead, and spin-wait for cores on a busy machine
        env["OMP_NUM_THREADS"] = "1"
    if step.light_import:
        env["MDQE_LIGHT_IMPORT"] = "1"
    return env
