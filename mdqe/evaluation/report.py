"""A self-contained HTML evaluation report (no network, no script): the summary table, AP per
category and per occlusion level, precision-recall curves, the error breakdown, and the worst videos,
with strips of frames showing the ground truth beside the predictions when the frames are available.

Plots are matplotlib figures inlined as SVG; frame strips are PNG data URIs. Every name from the files
(category, video, file) is shown as text, never as markup, and frames are read only from under the image
root. Only numpy, pycocotools and matplotlib (with its Pillow) are imported (matplotlib's object API, no
pyplot: no display backend is needed).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from ..utils.bounded_io import open_image
from ..utils.rle import segmentation_problems
from .analysis import OCCLUSION_METRICS, YTVISAnalysis
from .breakdown import ERROR_TYPES

__all__ = ["render_report", "write_report"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.name { text-align: left; }
figure { margin: 0.5em 0 1.5em; }
.strip img { margin: 2px; border: 1px solid #999; }
.muted { color: #777; }
"""
_COLORS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], np.float64,
)  # fmt: skip


def write_report(path: str, html: str) -> None:
    """Write a report made by `render_report` to `path` (utf-8), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)


def render_report(
    result: YTVISAnalysis,
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    image_root: str | None = None,
    title: str = "",
    num_worst: int = 5,
    extra_metrics: Mapping[str, float] | None = None,
) -> str:
    """The report as one HTML document.

    Args:
        result: `analyze_ytvis(gt, results)`.
        gt, results: what was evaluated (masks and frame file names for the strips).
        image_root: folder the videos' "file_names" are relative to; no strips without it.
        extra_metrics: more summary numbers (e.g. the YouTube-VIS 2022 AP_S / AP_L).
    """
    parts = [
        f"<h1>Evaluation report{': ' + html.escape(title) if title else ''}</h1>",
        _summary(result, extra_metrics or {}),
        "<h2>AP per category</h2>",
        _figure(_category_plot(result), "AP (IoU 0.50:0.95) of each category"),
        _category_table(result),
        "<h2>AP per occlusion level</h2>",
        _figure(_occlusion_plot(result), "AP of the ground truth of each occlusion level (OVIS grading)"),
        "<h2>Precision-recall curves</h2>",
        _figure(_pr_plot(result), "precision at each recall, averaged over the categories"),
    ]
    if result.breakdown is not None:
        parts += ["<h2>Error breakdown</h2>", _figure(_error_plot(result), _error_caption(result))]
        parts.append(_error_table(result))
    parts += ["<h2>Worst videos</h2>", _worst_videos(result, gt, results, image_root, num_worst)]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>MDQE evaluation report</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _summary(result: YTVISAnalysis, extra: Mapping[str, float]) -> str:
    metrics = {**result.metrics, **{OCCLUSION_METRICS[k]: v for k, v in result.occlusion.items()}, **extra}
    head = "".join(f"<th>{html.escape(k)}</th>" for k in metrics)
    row = "".join(f'<td id="metric-{html.escape(k)}">{_fmt(v)}</td>' for k, v in metrics.items())
    num_gt = len(result.occlusion_scores)
    num_videos = len(result.per_video)
    return (
        f"<h2>Summary</h2><p>{num_videos} videos, {num_gt} ground-truth tracks. AP and AR in percent "
        "(official YouTube-VIS evaluation); APso / APmo / APho: slightly / moderately / heavily occluded "
        f"ground truth.</p><table><tr>{head}</tr><tr>{row}</tr></table>"
    )


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(figure: Any, caption: str) -> str:
    return f"<figure>{_svg(figure)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _new_figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot()


def _bars(values: Mapping[str, float], ylabel: str, width: float = 8.0, percent_axis: bool = True) -> Any:
    figure, ax = _new_figure(max(4.0, min(width, 0.35 * len(values) + 2)), 3.0)
    names = list(values)
    heights = [0.0 if math.isnan(v) else v for v in values.values()]
    ax.bar(range(len(names)), heights, color="#3b75af")
    ax.set_xticks(
        range(len(names)),
        names,
        rotation=60 if len(names) > 6 else 0,
        ha="right" if len(names) > 6 else "center",
        parse_math=False,  # a category name is text: "$" starts no formula (a bad one would raise)
    )
    ax.set_ylabel(ylabel)
    top = max(heights, default=0)
    ax.set_ylim(0, max(100.0, top) if percent_axis else max(1.0, 1.15 * top))
    for i, v in enumerate(values.values()):
        if math.isnan(v):
            ax.text(i, 1, "n/a", ha="center", fontsize=8, color="#777")
    return figure


def _category_plot(result: YTVISAnalysis) -> Any:
    return _bars({result.category_names[c]: v for c, v in result.per_category.items()}, "AP", width=14)


def _category_table(result: YTVISAnalysis) -> str:
    rows = "".join(
        f'<tr><td class="name">{html.escape(result.category_names[c])}</td><td>{_fmt(v)}</td></tr>'
        for c, v in result.per_category.items()
    )
    return f"<table><tr><th>category</th><th>AP</th></tr>{rows}</table>"


def _occlusion_plot(result: YTVISAnalysis) -> Any:
    counts = dict.fromkeys(result.occlusion, 0)
    for level in (track["occlusion_level"] for video in result.per_video for track in video["tracks"]):
        counts[level] += 1
    return _bars({f"{k}\n({counts[k]} tracks)": v for k, v in result.occlusion.items()}, "AP")


def _pr_plot(result: YTVISAnalysis) -> Any:
    figure, ax = _new_figure(5.0, 3.6)
    recall = np.linspace(0, 1, 101)
    for label, curve in result.pr_curves.items():
        ax.plot(recall, curve, label=f"IoU {label}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend()
    return figure


def _error_plot(result: YTVISAnalysis) -> Any:
    gains = {kind: result.breakdown.delta_ap[kind] for kind in ERROR_TYPES}
    return _bars(gains, "AP gained by fixing", percent_axis=False)


def _error_caption(result: YTVISAnalysis) -> str:
    b = result.breakdown
    return (
        f"AP at IoU {b.iou_threshold:.2f} is {_fmt(b.ap)}; "
        "each bar: the AP gained by fixing that error type alone"
    )


def _error_table(result: YTVISAnalysis) -> str:
    b = result.breakdown
    rows = "".join(
        f'<tr><td class="name">{kind}</td><td>{b.counts[kind]}</td>'
        f'<td id="dap-{kind}">{b.delta_ap[kind]:+.2f}</td></tr>'
        for kind in ERROR_TYPES
    )
    return f"<table><tr><th>error type</th><th>count</th><th>AP gained</th></tr>{rows}</table>"


def _worst_videos(
    result: YTVISAnalysis,
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    image_root: str | None,
    num_worst: int,
) -> str:
    scored = [v for v in result.per_video if v["tracks"] and not math.isnan(v["AP"])]
    worst = sorted(scored, key=lambda v: (v["AP"], str(v["video_id"])))[:num_worst]
    if not worst:
        return '<p class="muted">no video with ground truth</p>'
    errors: dict[Any, dict[str, int]] = {}
    if result.breakdown is not None:
        for e in result.breakdown.errors:
            errors.setdefault(e.video_id, dict.fromkeys(ERROR_TYPES, 0))[e.kind] += 1
        for video_id, _ in result.breakdown.missed:
            errors.setdefault(video_id, dict.fromkeys(ERROR_TYPES, 0))["missed"] += 1
    videos = {v["id"]: v for v in gt["videos"]}
    out = [
        "<table><tr><th>video</th><th>AP</th><th>tracks (category: best IoU, occlusion)</th>"
        "<th>errors</th></tr>"
    ]
    for v in worst:
        tracks = ", ".join(
            f"{html.escape(result.category_names.get(t['category_id'], str(t['category_id'])))}: "
            f"{t['best_iou']:.2f}, {t['occlusion_level']}"
            for t in v["tracks"]
        )
        counts = errors.get(v["video_id"], {})
        error_text = ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"
        out.append(
            f'<tr><td class="name">{html.escape(str(v["video_id"]))}</td><td>{_fmt(v["AP"])}</td>'
            f'<td class="name">{tracks}</td><td class="name">{error_text}</td></tr>'
        )
    out.append("</table>")
    if image_root:
        for v in worst:
            out.append(_strip(videos[v["video_id"]], gt, results, image_root))
    else:
        out.append('<p class="muted">frame strips: pass the image root (--image-root) to see them</p>')
    return "\n".join(out)


def _strip(
    video: Mapping[str, Any], gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], image_root: str
) -> str:
    """Up to 4 frames of a video: ground truth (top row) beside the 5 best-scoring predictions."""
    names = video.get("file_names") or []
    height, width = int(video["height"]), int(video["width"])
    if not names:
        return f'<p class="muted">video {html.escape(str(video["id"]))}: no file_names, no frames</p>'
    frames = np.unique(np.linspace(0, len(names) - 1, min(4, len(names))).round().astype(int)).tolist()
    gts = [a for a in gt.get("annotations") or [] if a["video_id"] == video["id"]]
    preds = sorted((r for r in results if r["video_id"] == video["id"]), key=lambda r: -r["score"])[:5]
    cells = []
    for f in frames:
        try:
            image = _read_rgb(image_root, names[f], height, width)
        except ValueError as e:
            return f'<p class="muted">video {html.escape(str(video["id"]))}: frame {html.escape(str(e))}</p>'
        cells.append(
            (
                _png(
                    _overlay(
                        image,
                        [a["segmentations"][f] for a in gts if f < len(a["segmentations"])],
                        height,
                        width,
                    )
                ),
                _png(
                    _overlay(
                        image,
                        [r["segmentations"][f] for r in preds if f < len(r["segmentations"])],
                        height,
                        width,
                    )
                ),
            )
        )
    top = "".join(f'<img alt="ground truth, frame {f}" src="{g}">' for f, (g, _) in zip(frames, cells))
    bottom = "".join(f'<img alt="predictions, frame {f}" src="{p}">' for f, (_, p) in zip(frames, cells))
    return (
        f'<h3>video {html.escape(str(video["id"]))}</h3><div class="strip"><div>ground truth: {top}</div>'
        f"<div>predictions: {bottom}</div></div>"
    )


def _read_rgb(image_root: str, name: Any, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 frame `name` under `image_root`; ValueError saying why for a name that leaves the
    folder (a ground truth from others must not put other files of this machine into the report), a
    missing or unreadable file, or a frame of another size than the video's (read from its header, so a
    huge image is never decoded)."""
    from PIL import Image

    root = os.path.realpath(image_root)
    path = os.path.realpath(os.path.join(root, name)) if isinstance(name, str) else ""
    if not path or os.path.commonpath([root, path]) != root:
        raise ValueError(f"file name {name!r:.80} is outside the image root")
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found")
    try:
        with open_image(path) as image:
            if image.size != (width, height):
                raise ValueError(f"{path} is {image.size[0]}x{image.size[1]}, the video {width}x{height}")
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path} cannot be read ({e})") from None


def _mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """(H, W) bool of a compressed / uncompressed RLE or polygons; None when absent, or when its runs do
    not fill the frame exactly (pycocotools' decode would write past the mask)."""
    if not segmentation or segmentation_problems([segmentation], [(height, width)])[0]:
        return None
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(bool)


def _overlay(image: np.ndarray, segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """The frame with each mask blended in its own colour, shrunk to at most 240 pixels wide."""
    step = max(1, math.ceil(image.shape[1] / 240))
    out = image[::step, ::step].astype(np.float64)
    for i, segmentation in enumerate(segmentations):
        mask = _mask(segmentation, height, width)
        if mask is not None and mask.shape == image.shape[:2]:
            mask = mask[::step, ::step]
            out[mask] = 0.45 * out[mask] + 0.55 * _COLORS[i % len(_COLORS)]
    return out.astype(np.uint8)


def _png(image: np.ndarray) -> str:
    from matplotlib import image as mpimg

    buffer = io.BytesIO()
    mpimg.imsave(buffer, image, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
