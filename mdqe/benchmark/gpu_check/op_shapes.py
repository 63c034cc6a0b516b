"""The shapes at which the GPU check times multi-scale deformable attention: R50_ovis_360's calls.

R50_ovis_360 at 360p (configs/R50_ovis_360.yaml): a 360x640 frame is padded to 384x640, whose feature levels
at strides 8, 16, 32 and 64 are 48x80, 24x40, 12x20 and 6x10 (S = 5100 tokens per frame); 8 heads of 32
channels (HIDDEN_DIM 256) and 4 points (ENC_NUM_POINTS, DEC_NUM_POINTS); inference decodes clips of 4
frames (SAMPLING_FRAME_NUM_TEST) with 196 queries per frame (NUM_OBJECT_QUERIES 200 rounded down to the
14x14 query grid). The op's calls there (mdqe.modeling.encoder, mdqe.modeling.decoder):

- encoder: one query per token, N = 4 frames, Lq = 5100, the 4 levels;
- decoder cross-attention: N = 4 frames, Lq = 196, the 4 levels;
- decoder temporal attention: per clip (N = 1), one call per feature level whose "levels" are the clip's
  4 frames of that level, Lq = 196 (the four calls are timed together).

tests/benchmark/gpu_check/test_op_shapes.py checks these against the config. The dry run uses tiny shapes
of the same structure (1 head, 2 levels, 2 frames, 2 points), cheap enough for Triton's interpreter.
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OpCall", "OpShape", "op_shapes"]

LEVELS_360P = ((48, 80), (24, 40), (12, 20), (6, 10))
CLIP_FRAMES = 4
GRID_QUERIES = 14 * 14
LEVELS_DRY = ((4, 6), (2, 3))


@dataclass(frozen=True)
class OpCall:
    """One call of the op: value (batch, S, M, D) over `levels` (H, W), `queries` queries per batch
    element."""

    batch: int
    queries: int
    levels: tuple[tuple[int, int], ...]

    def describe(self) -> str:
        """e.g. "N 4, Lq 196, levels 48x80+24x40" or "N 1, Lq 196, levels 4 x 48x80"."""
        if len(self.levels) > 1 and len(set(self.levels)) == 1:
            levels = f"{len(self.levels)} x {self.levels[0][0]}x{self.levels[0][1]}"
        else:
            levels = "+".join(f"{h}x{w}" for h, w in self.levels)
        return f"N {self.batch}, Lq {self.queries}, levels {levels}"


@dataclass(frozen=True)
class OpShape:
    """A named group of calls timed together, with M heads, D channels per head and P points."""

    name: str
    calls: tuple[OpCall, ...]
    heads: int
    channels: int
    points: int

    def describe(self) -> str:
        """The shape in one line, e.g. "encoder: N 4, Lq 5100, levels 48x80+...; M 8, D 32, P 4"."""
        calls = "; ".join(call.describe() for call in self.calls)
        many = f"{len(self.calls)} calls: " if len(self.calls) > 1 else ""
        return f"{self.name}: {many}{calls}; M {self.heads}, D {self.channels}, P {self.points}"


def _shapes(
    levels: tuple[tuple[int, int], ...], frames: int, queries: int, heads: int, points: int
) -> tuple[OpShape, ...]:
    tokens = sum(h * w for h, w in levels)
    temporal = tuple(OpCall(1, queries, (level,) * frames) for level in levels)
    return (
        OpShape("encoder", (OpCall(frames, tokens, levels),), heads, 32, points),
        OpShape("decoder cross-attention", (OpCall(frames, queries, levels),), heads, 32, points),
        OpShape("decoder temporal", temporal, heads, 32, points),
    )


def op_shapes(dry_run: bool) -> tuple[OpShape, ...]:
    """R50_ovis_360's shapes (module docstring), or the dry run's tiny ones with the same names."""
    if dry_run:
        return _shapes(LEVELS_DRY, frames=2, queries=4, heads=1, points=2)
    return _shapes(LEVELS_360P, frames=CLIP_FRAMES, queries=GRID_QUERIES, heads=8, points=4)
