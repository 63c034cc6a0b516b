"""torch.compile of MDQE's network parts (MODEL.MDQE.COMPILE).

MDQE compiles two parts separately, for training and for whole-video inference alike:

- the per-frame part (backbone, input projections, encoder, query selection, mask features and the
  decoder's value projections), run once per frame;
- the per-clip part (query association, decoder, heads), run once per clip.

The criterion, the matcher and the tracker stay eager: they branch on data (Hungarian matching, the
number of kept instances), which a graph cannot hold.

Frame sizes change between training batches and between videos. A part's first graph is compiled for the
sizes of its first call (static shapes: inductor's CPU code is then about 40% faster than with symbolic
sizes, BENCHMARKS.md "torch.compile"), so a run on frames of one size never pays for dynamic shapes. The
first call with another frame size marks the spatial sizes of every input dynamic from then on: one more
graph per part and mode (training / evaluation) serves every further size, and no later size recompiles.
What else recompiles: a new clip length T (the decoder's temporal attention picks frames by T), a new
frame count (made dynamic by dynamo itself at its first change), and a size of 1 in a marked dimension
(torch.compile specialises sizes 0 and 1). Every compilation is counted and logged
(`CompiledPart.compiles`). Dynamo records the sizes it has seen per code object, not per model: a second
model compiled in the same process after one that ran other frame sizes starts with dynamic sizes (call
`torch._dynamo.reset()` between them to get static graphs again, as tools/benchmarks/benchmark_compile.py
does between variants).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mdqe.inference.frame_cache import FrameFeatures

__all__ = ["CompiledPart", "DynamicDims", "features_dynamic_dims", "frames_dynamic_dims"]

logger = logging.getLogger(__name__)


DynamicDims = list[tuple[torch.Tensor, tuple[int, ...]]]


def frames_dynamic_dims(images: torch.Tensor, image_sizes: torch.Tensor) -> DynamicDims:
    """The dimensions of the per-frame part's inputs that vary with the frame size: the size of images
    (N, 3, Hp, Wp). (The frame count N changes at every video's last chunk of frames; dynamo makes it
    dynamic by itself at its first change, without touching the spatial sizes.)"""
    del image_sizes
    return [(images, (2, 3))]


def features_dynamic_dims(features: FrameFeatures, num_frames: int | None = None) -> DynamicDims:
    """The spatial sizes in the per-frame features that the per-clip part reads (`FrameFeatures` of
    `QueryDecoder.frame_features`): the token count S (or S_l) of every layer's values, and the sizes of
    the mask features and the query-selection logits. `num_frames` is unused (the clip length stays
    static, see the module docstring); it keeps the signature of the part's call."""
    del num_frames
    dims: DynamicDims = []
    for key, tensor_dims in (("mask_feats", (2, 3)), ("rpn_logits", (1, 2))):
        if features.tensors.get(key) is not None:
            dims.append((features.tensors[key], tensor_dims))
    for values in features.values:
        dims.append((values.cross, (1,)))
        dims += [(level, (1,)) for level in values.temporal or ()]
    return dims


class CompiledPart:
    """`fn`, compiled with torch.compile on its first call when `enabled`, else called as it is.

    The first call compiles for its sizes; from the first call with other sizes in `dynamic_dims`, those
    dimensions are marked dynamic (module docstring). Every graph dynamo hands to the backend is counted
    in `compiles` and logged, so a test or a user sees recompilations and graph breaks (more than one
    graph per call signature).
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        dynamic_dims: Callable[..., DynamicDims],
        enabled: bool,
        backend: str = "inductor",
    ):
        """
        Args:
            name: the part's name in log messages.
            fn: the eager function.
            dynamic_dims: the dimensions of a call's arguments that vary with the frame size, from the
                call's arguments.
            enabled: compile (MODEL.MDQE.COMPILE); False calls `fn` directly.
            backend: a torch.compile backend name ("inductor"; tests use "aot_eager", which traces and
                partitions the same graphs without generating code).
        """
        self.name = name
        self.fn = fn
        self.dynamic_dims = dynamic_dims
        self._first_sizes: tuple[int, ...] | None = None
        self._dynamic = False
        self.enabled = enabled
        self.backend = backend
        self.compiles = 0
        self._compiled: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # a compiled function is neither picklable nor copyable: copies compile again on first use
        return {**self.__dict__, "_compiled": None, "compiles": 0, "_first_sizes": None, "_dynamic": False}

    def _count(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.compiles += 1
        logger.info(
            "torch.compile: the %s, graph %d (%d nodes)%s",
            self.name,
            self.compiles,
            len(gm.graph.nodes),
            ""
            if self.compiles == 1
            else ", a recompilation (other sizes, mode or clip length, or a size of 1)",
        )
        return torch._dynamo.lookup_backend(self.backend)(gm, example_inputs)

    def __call__(self, *args: Any) -> Any:
        if not self.enabled:
            return self.fn(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, backend=self._count)
        dims = self.dynamic_dims(*args)
        if not self._dynamic:
            sizes = tuple(tensor.shape[d] for tensor, tensor_dims in dims for d in tensor_dims)
            if self._first_sizes is None:
                self._first_sizes = sizes
            self._dynamic = sizes != self._first_sizes
        if self._dynamic:
            for tensor, tensor_dims in dims:
                for d in tensor_dims:
                    torch._dynamo.maybe_mark_dynamic(tensor, d)
        return self._compiled(*args)
