"""MDQE's query initialisation: grid-guided query selection and inter-frame query association.

1. Selection (per frame): the max-over-classes score map of the stride-8 encoder level is upsampled to a
   multiple of the g x g grid (g = sqrt(Q)); in every cell the peak becomes a query, whose content is
   the encoder features bilinearly sampled there, averaged over all levels.
2. Association (per clip): the queries of every frame are re-ordered to match the queries of the
   centre frame by the dot product of their track embeddings, within a window of grid cells that
   grows with the distance in time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "associate_queries",
    "grid_relative_positions",
    "query_grid_size",
    "sample_query_features",
    "select_grid_queries",
]


def grid_relative_positions(grid_size: int) -> torch.Tensor:
    """|cell offset| between every pair of cells of a g x g grid, cells row-major.

    Returns:
        (g*g, g*g, 2) int64 (|dx|, |dy|).
    """
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    cells = torch.stack([cols, rows], dim=-1).view(-1, 2)
    return (cells[:, None] - cells[None]).abs()


def query_grid_size(num_queries: int) -> int:
    """g for Q = g * g queries; a Q that is not a perfect square is an error (the config's
    NUM_OBJECT_QUERIES is rounded down to a square once, by `mdqe.modeling.build.num_grid_queries`)."""
    grid_size = math.isqrt(num_queries)
    if grid_size * grid_size != num_queries:
        raise ValueError(f"the number of queries must be a perfect square (query grid), got {num_queries}")
    return grid_size


def select_grid_queries(class_logits: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Grid-guided query selection.

    Args:
        class_logits: (N, H, W, K) class logits of the stride-8 level.
        grid_size: g; Q = g * g queries.

    Returns:
        (N, Q, 2) normalised (x, y) of the peak of each cell, cells row-major. As the original,
        x = col / W_up and y = row_index_float / H_up with y computed by true division (no floor, no
        half-pixel shift), on the upsampled map of size (H_up, W_up) = ((2H // g + 1) g, (2W // g + 1) g).
    """
    n, height, width, _ = class_logits.shape
    score = class_logits.float().sigmoid().max(dim=-1).values[:, None]
    up_h = (2 * height // grid_size + 1) * grid_size
    up_w = (2 * width // grid_size + 1) * grid_size
    score = F.interpolate(score, size=(up_h, up_w), mode="bilinear", align_corners=False)
    cell_h, cell_w = up_h // grid_size, up_w // grid_size
    # (N, g, cell_h, g, cell_w) -> (N, g, g, cell_h * cell_w)
    cells = score.view(n, grid_size, cell_h, grid_size, cell_w).permute(0, 1, 3, 2, 4).flatten(3)
    peak = cells.argmax(dim=-1)
    cell_row = torch.arange(grid_size, device=peak.device)[:, None]
    cell_col = torch.arange(grid_size, device=peak.device)[None, :]
    # integer remainders as a - (a // b) * b: ONNX export has no remainder by a symbolic size
    peak_row = torch.div(peak, cell_w, rounding_mode="floor")
    row = cell_row * cell_h + peak_row
    col = cell_col * cell_w + (peak - peak_row * cell_w)
    index = (row * up_w + col).flatten(1)
    x = (index - torch.div(index, up_w, rounding_mode="floor") * up_w) / up_w
    y = torch.div(index, up_w) / up_h
    return torch.stack([x, y], dim=-1)


def sample_query_features(levels: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    """Content of the selected queries: bilinear samples (border padding) averaged over levels.

    Args:
        levels: per level (N, C, H_l, W_l) encoder maps.
        coords: (N, Q, 2) normalised (x, y), Q = g * g.

    Returns:
        (N, Q, C).
    """
    n, q, _ = coords.shape
    grid = (2 * coords - 1).view(n, 1, q, 2)
    grid = grid.to(torch.promote_types(grid.dtype, levels[0].dtype))  # a float64 model samples in float64
    samples = [
        F.grid_sample(level, grid, mode="bilinear", padding_mode="border", align_corners=False)
        for level in levels
    ]
    return torch.stack(samples).mean(0).view(n, -1, q).transpose(1, 2)


def associate_queries(
    track_embed: torch.Tensor, relative_positions: torch.Tensor, window: float
) -> torch.Tensor:
    """Inter-frame query association to the centre frame of each clip.

    Frame t may match key query k of the centre frame ct = (T - 1) // 2 only with queries whose cell is
    within `window * |t - ct|` cells of k's in both axes (so the key frame keeps its order); among those
    the best raw dot product wins.

    The dot products are taken in float64: the original's softmax-then-argmax in float32 leaves the
    winner to rounding noise when two candidates are within ~1e-6 (a 5e-7 margin occurs on the
    12-frame reference video), and in float64 the winner is the exact best one, which is also what the
    original picked there.

    Args:
        track_embed: (B, T, Q, E) track embeddings of the selected queries.
        relative_positions: (Q, Q, 2) int64 cell offsets (`grid_relative_positions`).
        window: grid window per frame of distance (training: WINDOW_INTER_FRAME_ASSOCIATION,
            inference: half of it).

    Returns:
        (B, T, Q) int64: slot k of frame t takes that frame's query index [b, t, k].
    """
    num_frames = track_embed.shape[1]
    center = (num_frames - 1) // 2
    embed = track_embed.double()
    similarity = torch.einsum("btqe,bke->btqk", embed, embed[:, center])
    distance = (torch.arange(num_frames, device=track_embed.device) - center).abs()
    # (T, Q, K): True where query q of frame t is too far from key query k
    too_far = (relative_positions[None] > window * distance[:, None, None, None]).any(dim=-1)
    similarity = similarity.masked_fill(too_far[None], float("-inf"))
    return similarity.argmax(dim=-2)  # the softmax over dim -2 of the original keeps this order
