"""torch.compile of MDQE's network parts (MODEL.MDQE.COMPILE).

MDQE compiles two parts separately, for training and for whole-video inference alike:

- the per-frame part (backbone, input projections, encoder, query selection, mask features and the
  decoder's value projections), run once per frame;
- the per-clip part (query association, decoder, heads), run once per clip.

The criterion, the matcher and the tracker stay eager: they branch on data (Hungarian matching, the
number of kept instances), which a graph cannot hold.

Frame sizes change between training batches and between videos, so the spatial sizes of every input are
marked dynamic before the first call: one graph per part and mode (training / evaluation) serves every
frame size, and a new size does not recompile. What still recompiles: a new clip length T (the decoder's
temporal attention picks frames by T), and a size of 1 in a marked dimension (torch.compile specialises
sizes 0 and 1). Every compilation is counted and logged (`CompiledPart.compiles`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch

from mdqe.inference.frame_cache import FrameFeatures

__all__ = ["CompiledPart", "mark_features_dynamic", "mark_frames_dynamic"]

logger = logging.getLogger(__name__)


def _mark(tensor: torch.Tensor | None, dims: Iterable[int]) -> None:
    if tensor is not None:
        for dim in dims:
            torch._dynamo.maybe_mark_dynamic(tensor, dim)


def mark_frames_dynamic(images: torch.Tensor, image_sizes: torch.Tensor) -> None:
    """The inputs of the per-frame part: frame count and size of images (N, 3, Hp, Wp), and N of
    image_sizes (N, 2)."""
    _mark(images, (0, 2, 3))
    _mark(image_sizes, (0,))


def mark_features_dynamic(features: FrameFeatures, num_frames: int | None = None) -> None:
    """The spatial sizes in the per-frame features that the per-clip part reads (`FrameFeatures` of
    `QueryDecoder.frame_features`): the token count S (or S_l) of every layer's values, and the sizes of
    the mask features and the query-selection logits. `num_frames` is unused (the clip length stays
    static, see the module docstring); it keeps the signature of the part's call."""
    del num_frames
    _mark(features.tensors.get("mask_feats"), (2, 3))
    _mark(features.tensors.get("rpn_logits"), (1, 2))
    for values in features.values:
        _mark(values.cross, (1,))
        for level in values.temporal or ():
            _mark(level, (1,))


class CompiledPart:
    """`fn`, compiled with torch.compile on its first call when `enabled`, else called as it is.

    Every graph dynamo hands to the backend is counted in `compiles` and logged, so a test or a user
    sees recompilations (`compiles - 1` for a part that runs in one mode) and graph breaks (more than one
    graph per call signature).
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        mark_dynamic: Callable[..., None],
        enabled: bool,
        backend: str = "inductor",
    ):
        """
        Args:
            name: the part's name in log messages.
            fn: the eager function.
            mark_dynamic: called with the call's arguments before each compiled call, to mark their
                dynamic dimensions.
            enabled: compile (MODEL.MDQE.COMPILE); False calls `fn` directly.
            backend: a torch.compile backend name ("inductor"; tests use "aot_eager", which traces and
                partitions the same graphs without generating code).
        """
        self.name = name
        self.fn = fn
        self.mark_dynamic = mark_dynamic
        self.enabled = enabled
        self.backend = backend
        self.compiles = 0
        self._compiled: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # a compiled function is neither picklable nor copyable: copies compile again on first use
        return {**self.__dict__, "_compiled": None, "compiles": 0}

    def _count(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.compiles += 1
        logger.info(
            "torch.compile: the %s, graph %d (%d nodes)%s",
            self.name,
            self.compiles,
            len(gm.graph.nodes),
            "" if self.compiles == 1 else ", a recompilation (other mode, clip length, or a size of 0/1)",
        )
        return torch._dynamo.lookup_backend(self.backend)(gm, example_inputs)

    def __call__(self, *args: Any) -> Any:
        if not self.enabled:
            return self.fn(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, backend=self._count)
        self.mark_dynamic(*args)
        return self._compiled(*args)
