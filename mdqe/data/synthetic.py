"""A synthetic occluded-video dataset in YouTube-VIS format, the project's embedded default.

Each video shows 2-5 textured shapes (circle, square, triangle, star, ring) that move along straight
paths crossing near a common meeting point, turn and pulse, enter and leave the view, and so occlude one
another heavily around the time they meet (as in OVIS). The category of a shape is visible from its
outline and its colour/texture. Everything is a pure function of the seed, so tests can regenerate any
video in memory and compare it with what the loaders read from disk.

Ground truth: the *visible* mask of every instance in every frame (the shape minus the shapes in front
of it, cut to the frame). A frame where fewer than `min_visible_pixels` pixels of an instance are
visible has a null segmentation; instances never visible are left out.

`ensure_synthetic_vis(root)` writes `root/synthetic_vis/` on first use (atomic rename under a file lock,
so concurrent processes never see a half-written dataset)::

    synthetic_vis/
      manifest.json                 generator parameters and per-video facts (seed, occlusion)
      train.json, valid.json        YouTube-VIS format
      train/JPEGImages/<video>/<frame>.jpg, valid/JPEGImages/...
      coco_train.json, coco/<image>.jpg   (only with num_coco_images > 0) COCO-format single frames
                                    trained beside the videos as pseudo-clips

`ensure_synthetic_coco(root)` writes the image pre-training set `root/synthetic_coco/` the same way (the
original's COCO stage in miniature: single frames of the same generator, 2-6 shapes each)::

    synthetic_coco/
      manifest.json                 generator parameters and per-image facts (seed, occlusion)
      train.json, val.json          COCO format
      train/<image>.jpg, val/<image>.jpg
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import pycocotools.mask as mask_util

from ..utils.rle import encode_mask

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SplitSpec",
    "SyntheticVideo",
    "ensure_synthetic_coco",
    "ensure_synthetic_vis",
    "render_video",
    "split_video",
    "write_synthetic_coco",
    "write_synthetic_vis",
]

# Bump when the rendering changes, so stale data on disk is regenerated rather than silently reused.
GENERATOR_VERSION = 1

# (id, name, colour for visualisation)
SYNTHETIC_CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "circle", (230, 70, 40)),
    (2, "square", (40, 90, 230)),
    (3, "triangle", (40, 190, 60)),
    (4, "star", (240, 210, 30)),
    (5, "ring", (200, 50, 200)),
)

# Per category: texture pattern in the shape's own frame (so it moves and turns with the shape).
_TEXTURES = {1: "stripes", 2: "checker", 3: "diagonal", 4: "radial", 5: "dots"}


@dataclass(frozen=True)
class SplitSpec:
    """What one split of the synthetic dataset contains."""

    num_videos: int
    min_length: int = 8
    max_length: int = 24
    # (height, width) choices; long side 160-256 px keeps CPU training fast
    frame_sizes: tuple[tuple[int, int], ...] = ((144, 192), (160, 256), (192, 256), (176, 176), (224, 160))
    min_instances: int = 2
    max_instances: int = 5
    # every video must have a frame where some instance has at least this fraction of its in-view
    # area hidden by others (0 disables the check)
    min_occlusion: float = 0.0
    min_visible_pixels: int = 12


# 80 validation videos keep the main job's AP stable across training seeds (BENCHMARKS.md "Main job")
DEFAULT_SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(num_videos=200),
    "valid": SplitSpec(num_videos=80, min_occlusion=0.4),
}
DEFAULT_NUM_COCO_IMAGES = 0
# the image pre-training set (synthetic_coco): held-out val images come from their own seeds
DEFAULT_COCO_SPLITS: dict[str, int] = {"train": 8000, "val": 400}
DEFAULT_SEED = 0
_SPLIT_CODES = {"train": 1, "valid": 2, "coco": 3, "coco_val": 4}


@dataclass
class SyntheticVideo:
    """One generated video and its ground truth.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        masks: (N, T, H, W) bool visible masks (all-zero in frames where the instance is absent).
        category_ids: (N,) int dataset category ids (1-based, see SYNTHETIC_CATEGORIES).
        max_occlusion: largest fraction of an instance's in-view area hidden by other instances.
        seed: the seed the video was rendered from.
    """

    frames: np.ndarray
    masks: np.ndarray
    category_ids: np.ndarray
    max_occlusion: float
    seed: int


def _shape_polygons(category_id: int, radius: float, angle: float, center: np.ndarray) -> list[np.ndarray]:
    """Outline(s) of a shape as (K, 2) xy float arrays; for the ring, [outer, hole]."""
    if category_id in (1, 5):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        rel = [np.stack([np.cos(t), np.sin(t)], 1) * radius]
        if category_id == 5:
            rel.append(rel[0] * 0.55)
    elif category_id == 2:
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        rel = [np.stack([np.cos(t), np.sin(t)], 1) * radius]
    elif category_id == 3:
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rel = [np.stack([np.cos(t), np.sin(t)], 1) * radius * 1.2]
    else:
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.15, 0.5) * radius
        rel = [np.stack([np.cos(t), np.sin(t)], 1) * r[:, None]]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [p @ rot.T + center for p in rel]


def _rasterize(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of the first polygon minus the following ones (holes), with subpixel vertices."""
    mask = np.zeros((height, width), np.uint8)
    for i, poly in enumerate(polygons):
        pts = np.round(poly * 16).astype(np.int32)[None]
        cv2.fillPoly(mask, pts, 1 if i == 0 else 0, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _texture(
    category_id: int, color: np.ndarray, radius: float, angle: float, center: np.ndarray, xy: np.ndarray
) -> np.ndarray:
    """(K, 3) float colours of a shape at the K pixels `xy` (K, 2), in the shape's own rotating frame."""
    dx, dy = xy[:, 0] - center[0], xy[:, 1] - center[1]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    period = max(radius / 2.5, 3.0)
    kind = _TEXTURES[category_id]
    if kind == "stripes":
        light = np.floor(v / period) % 2
    elif kind == "checker":
        light = (np.floor(u / period) + np.floor(v / period)) % 2
    elif kind == "diagonal":
        light = np.floor((u + v) / (1.4 * period)) % 2
    elif kind == "radial":
        light = np.clip(1.0 - np.sqrt(u * u + v * v) / (1.2 * radius), 0.0, 1.0)
    else:
        light = (np.sin(u * np.pi / period) * np.sin(v * np.pi / period) > 0.2).astype(np.float32)
    shade = 0.55 + 0.45 * light
    return shade[:, None] * color[None, :]


def render_video(seed: int, spec: SplitSpec) -> SyntheticVideo:
    """Render one video from `seed` (retrying with derived seeds until it satisfies `spec`)."""
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        video = _render_attempt(rng, spec, seed)
        if video is not None:
            return video
    raise RuntimeError(f"synthetic video with seed {seed}: no valid attempt in 100 tries for {spec}")


def _render_attempt(rng: np.random.Generator, spec: SplitSpec, seed: int) -> SyntheticVideo | None:
    height, width = spec.frame_sizes[rng.integers(len(spec.frame_sizes))]
    length = int(rng.integers(spec.min_length, spec.max_length + 1))
    num = int(rng.integers(spec.min_instances, spec.max_instances + 1))
    short = min(height, width)

    categories = rng.integers(1, len(SYNTHETIC_CATEGORIES) + 1, size=num)
    base_colors = np.array([SYNTHETIC_CATEGORIES[c - 1][2] for c in categories], np.float32)
    colors = np.clip(base_colors * rng.uniform(0.85, 1.15, size=(num, 1)), 0, 255)
    radii = rng.uniform(0.12, 0.22, size=num) * short
    # paths cross near a common meeting point at random times: heavy mutual occlusion there, while the
    # path lengths (0.4-1.4 frame widths) make shapes enter and leave the view
    meet = np.array([width, height]) * rng.uniform(0.35, 0.65, size=2)
    offsets = rng.normal(0, 0.25, size=(num, 2)) * radii[:, None]
    meet_time = rng.uniform(0.2, 0.8, size=num) * (length - 1)
    directions = rng.uniform(0, 2 * np.pi, size=num)
    speeds = rng.uniform(0.4, 1.4, size=num) * max(height, width) / max(length - 1, 1)
    velocity = np.stack([np.cos(directions), np.sin(directions)], 1) * speeds[:, None]
    angles0 = rng.uniform(0, 2 * np.pi, size=num)
    spins = rng.uniform(-0.25, 0.25, size=num)
    pulse_phase = rng.uniform(0, 2 * np.pi, size=num)
    depth_order = rng.permutation(num)  # back to front

    bg_a, bg_b = rng.uniform(70, 150, size=(2, 3))
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    background = bg_a * (1 - ramp) + bg_b * ramp
    # one noise field per video, shifted every frame: cheap, and the background still flickers
    noise = rng.normal(0, 5, size=(height, width, 3)).astype(np.float32)

    frames = np.empty((length, height, width, 3), np.uint8)
    masks = np.zeros((num, length, height, width), bool)
    max_occlusion = 0.0
    for t in range(length):
        canvas = background + np.roll(noise, (3 * t, 5 * t), axis=(0, 1))
        owner = np.full((height, width), -1, np.int64)
        full_areas = np.zeros(num)
        for i in depth_order:
            center = meet + offsets[i] + velocity[i] * (t - meet_time[i])
            radius = radii[i] * (1 + 0.08 * np.sin(0.5 * t + pulse_phase[i]))
            angle = angles0[i] + spins[i] * t
            shape = _rasterize(_shape_polygons(int(categories[i]), radius, angle, center), height, width)
            ys, xs = np.nonzero(shape)
            if len(ys) == 0:
                continue
            full_areas[i] = len(ys)
            owner[ys, xs] = i
            xy = np.stack([xs, ys], 1).astype(np.float32)
            canvas[ys, xs] = _texture(int(categories[i]), colors[i], radius, angle, center, xy)
        for i in range(num):
            visible = owner == i
            area = visible.sum()
            if area >= spec.min_visible_pixels:
                masks[i, t] = visible
            if full_areas[i] >= spec.min_visible_pixels:
                max_occlusion = max(max_occlusion, 1.0 - area / full_areas[i])
        frames[t] = np.clip(canvas, 0, 255).astype(np.uint8)

    present = masks.reshape(num, -1).any(1)
    if not present.any() or max_occlusion < spec.min_occlusion:
        return None
    return SyntheticVideo(
        frames=frames,
        masks=masks[present],
        category_ids=categories[present].astype(np.int64),
        max_occlusion=float(max_occlusion),
        seed=seed,
    )


def split_video(
    split: str, index: int, seed: int = DEFAULT_SEED, spec: SplitSpec | None = None
) -> SyntheticVideo:
    """Regenerate video `index` of `split` ("train", "valid" or "coco") exactly as written to disk."""
    spec = spec or (DEFAULT_SPLITS.get(split) or _coco_spec())
    return render_video(_video_seed(seed, split, index), spec)


def _video_seed(seed: int, split: str, index: int) -> int:
    return int(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).generate_state(1)[0])


def _coco_spec() -> SplitSpec:
    return SplitSpec(num_videos=0, min_length=1, max_length=1, min_instances=2, max_instances=6)


def _categories_json() -> list[dict]:
    return [{"id": i, "name": name, "supercategory": "shape"} for i, name, _ in SYNTHETIC_CATEGORIES]


def _write_jpeg(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"could not write {path}")


def _write_video_split(out_dir: str, split: str, spec: SplitSpec, seed: int) -> list[dict]:
    videos, annotations, facts = [], [], []
    for index in range(spec.num_videos):
        video = split_video(split, index, seed, spec)
        video_id = index + 1
        name = f"{split}_{video_id:04d}"
        length, height, width = video.frames.shape[:3]
        os.makedirs(os.path.join(out_dir, split, "JPEGImages", name))
        file_names = [f"{name}/{t:05d}.jpg" for t in range(length)]
        for t in range(length):
            _write_jpeg(os.path.join(out_dir, split, "JPEGImages", file_names[t]), video.frames[t])
        videos.append(
            {"id": video_id, "file_names": file_names, "length": length, "height": height, "width": width}
        )
        for mask, category_id in zip(video.masks, video.category_ids):
            segms, bboxes, areas = [], [], []
            for frame_mask in mask:
                if frame_mask.any():
                    rle = encode_mask(frame_mask, text=True)
                    segms.append(rle)
                    bboxes.append(mask_util.toBbox(rle).tolist())
                    areas.append(int(mask_util.area(rle)))
                else:
                    segms.append(None)
                    bboxes.append(None)
                    areas.append(None)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": int(category_id),
                    "iscrowd": 0,
                    "height": height,
                    "width": width,
                    "length": 1,
                    "segmentations": segms,
                    "bboxes": bboxes,
                    "areas": areas,
                }
            )
        facts.append(
            {"video_id": video_id, "seed": video.seed, "max_occlusion": round(video.max_occlusion, 4)}
        )
    data = {
        "info": {"description": f"synthetic occluded shapes, {split} split", "version": GENERATOR_VERSION},
        "videos": videos,
        "categories": _categories_json(),
        "annotations": annotations,
    }
    with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
        json.dump(data, f)
    return facts


def _write_coco_images(out_dir: str, image_dir: str, json_name: str, split: str, num: int, seed: int) -> list:
    """Write `num` single-frame images of `split` ("coco" or "coco_val") as a COCO-format json; returns
    the per-image facts for the manifest."""
    os.makedirs(os.path.join(out_dir, image_dir))
    images, annotations, facts = [], [], []
    for index in range(num):
        video = split_video(split, index, seed, _coco_spec())
        height, width = video.frames.shape[1:3]
        file_name = f"{index + 1:06d}.jpg"
        _write_jpeg(os.path.join(out_dir, image_dir, file_name), video.frames[0])
        images.append({"id": index + 1, "file_name": file_name, "height": height, "width": width})
        for mask, category_id in zip(video.masks[:, 0], video.category_ids):
            if not mask.any():
                continue
            rle = encode_mask(mask, text=True)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": int(category_id),
                    "iscrowd": 0,
                    "segmentation": rle,
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "area": int(mask_util.area(rle)),
                }
            )
        facts.append(
            {"image_id": index + 1, "seed": video.seed, "max_occlusion": round(video.max_occlusion, 4)}
        )
    data = {"images": images, "annotations": annotations, "categories": _categories_json()}
    with open(os.path.join(out_dir, json_name), "w") as f:
        json.dump(data, f)
    return facts


def write_synthetic_vis(
    out_dir: str,
    splits: dict[str, SplitSpec] | None = None,
    num_coco_images: int = DEFAULT_NUM_COCO_IMAGES,
    seed: int = DEFAULT_SEED,
) -> None:
    """Write the dataset into the empty or missing folder `out_dir` (no locking; see ensure_synthetic_vis)."""
    splits = DEFAULT_SPLITS if splits is None else splits
    unknown = set(splits) - {"train", "valid"}
    if unknown:
        raise ValueError(f"unknown synthetic split(s) {sorted(unknown)}; expected 'train' and/or 'valid'")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {**_manifest_params(splits, num_coco_images, seed), "videos": {}}
    for name, spec in splits.items():
        manifest["videos"][name] = _write_video_split(out_dir, name, spec, seed)
    if num_coco_images:
        _write_coco_images(out_dir, "coco", "coco_train.json", "coco", num_coco_images, seed)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def write_synthetic_coco(
    out_dir: str, splits: dict[str, int] | None = None, seed: int = DEFAULT_SEED
) -> None:
    """Write the image pre-training set (split name -> number of images; "train" and/or "val") into the
    empty or missing folder `out_dir` (no locking; see ensure_synthetic_coco)."""
    splits = DEFAULT_COCO_SPLITS if splits is None else splits
    unknown = set(splits) - {"train", "val"}
    if unknown:
        raise ValueError(f"unknown synthetic_coco split(s) {sorted(unknown)}; expected 'train' and/or 'val'")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {**_coco_manifest_params(splits, seed), "images": {}}
    for name, num in splits.items():
        code = "coco" if name == "train" else "coco_val"
        manifest["images"][name] = _write_coco_images(out_dir, name, f"{name}.json", code, num, seed)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def _manifest_params(splits: dict[str, SplitSpec], num_coco_images: int, seed: int) -> dict:
    return {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "splits": {name: dataclasses.asdict(spec) for name, spec in splits.items()},
        "num_coco_images": num_coco_images,
    }


def _coco_manifest_params(splits: dict[str, int], seed: int) -> dict:
    return {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "splits": dict(splits),
        "spec": dataclasses.asdict(_coco_spec()),
    }


def _is_current(path: str, params: dict, any_params: bool) -> bool:
    """Whether `path` holds a complete dataset of this generator version made with `params` (or, with
    `any_params`, with any parameters)."""
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if any_params:
        return manifest.get("version") == GENERATOR_VERSION
    # json turns tuples into lists: compare through a json round trip
    return all(manifest.get(k) == v for k, v in json.loads(json.dumps(params)).items())


def _ensure(root: str, folder: str, params: dict, accept_existing: bool, write: Callable[[str], None]) -> str:
    """Return `root/folder`, first calling `write(tmp_dir)` and renaming the result into place unless it
    already holds a current dataset. Safe against concurrent callers: a file lock, then an atomic rename
    of the finished folder, so no reader sees a partial one."""
    import fcntl  # POSIX only: imported here so that `import mdqe` works on platforms without it

    target = os.path.join(root, folder)
    if _is_current(target, params, accept_existing):
        return target
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{folder}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_current(target, params, accept_existing):
                return target
            logger.info(f"Generating the synthetic dataset {folder} into {target} ...")
            tmp = tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=root)
            try:
                write(tmp)
                if os.path.exists(target):
                    shutil.rmtree(target)
                os.rename(tmp, target)
            finally:
                if os.path.exists(tmp):
                    shutil.rmtree(tmp)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def ensure_synthetic_vis(
    root: str,
    splits: dict[str, SplitSpec] | None = None,
    num_coco_images: int = DEFAULT_NUM_COCO_IMAGES,
    seed: int = DEFAULT_SEED,
    accept_existing: bool = False,
) -> str:
    """Return `root/synthetic_vis`, generating the video dataset there first unless it already holds one
    made by this generator version with the same parameters (with `accept_existing`: with any
    parameters, so that a custom dataset written by tools/make_synthetic_vis.py is used as is)."""
    splits = DEFAULT_SPLITS if splits is None else splits
    params = _manifest_params(splits, num_coco_images, seed)
    return _ensure(
        root,
        "synthetic_vis",
        params,
        accept_existing,
        lambda d: write_synthetic_vis(d, splits, num_coco_images, seed),
    )


def ensure_synthetic_coco(
    root: str, splits: dict[str, int] | None = None, seed: int = DEFAULT_SEED, accept_existing: bool = False
) -> str:
    """Return `root/synthetic_coco`, generating the image pre-training set there first (as
    `ensure_synthetic_vis`)."""
    splits = DEFAULT_COCO_SPLITS if splits is None else splits
    params = _coco_manifest_params(splits, seed)
    return _ensure(
        root, "synthetic_coco", params, accept_existing, lambda d: write_synthetic_coco(d, splits, seed)
    )
