"""mdqe.utils.compat: detectron2 v0.6 works with a Pillow that has no `PIL.Image.LINEAR` (Pillow >= 10)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image

from mdqe.utils import compat

REPO_ROOT = Path(__file__).resolve().parents[1]


def _no_deprecated_names(name: str):
    raise AttributeError(f"module 'PIL.Image' has no attribute {name!r}")


def test_apply_restores_linear_as_bilinear(monkeypatch):
    # Pillow 9 serves LINEAR through the module's __getattr__ (with a deprecation warning); 10 removed it.
    monkeypatch.setattr(Image, "__getattr__", _no_deprecated_names, raising=False)
    monkeypatch.delattr(Image, "LINEAR", raising=False)
    assert not hasattr(Image, "LINEAR")
    compat.apply()
    assert Image.LINEAR == Image.Resampling.BILINEAR


def test_apply_keeps_an_existing_linear(monkeypatch):
    monkeypatch.setattr(Image, "LINEAR", Image.Resampling.BILINEAR, raising=False)
    compat.apply()
    assert Image.LINEAR is Image.Resampling.BILINEAR


# Run in a fresh interpreter: detectron2 reads Image.LINEAR when `detectron2.data` is first imported,
# which in this process has already happened.
_WITHOUT_LINEAR = textwrap.dedent(
    """
    import numpy as np
    from PIL import Image

    def no_deprecated_names(name):
        raise AttributeError(f"module 'PIL.Image' has no attribute {name!r}")

    # What Pillow >= 10 looks like: Pillow 9 serves LINEAR through the module's __getattr__.
    vars(Image).pop("LINEAR", None)
    Image.__getattr__ = no_deprecated_names
    assert not hasattr(Image, "LINEAR")
    import mdqe  # noqa: F401  (applies the shim before detectron2.data is imported)
    from detectron2.data import transforms as T
    from mdqe.data.augmentation import ResizeShortestEdgeClip, apply_clip_augmentations, warp_masks

    frame = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    resized = T.ResizeTransform(40, 60, 20, 30, Image.BILINEAR).apply_image(frame)
    assert resized.shape == (20, 30, 3), resized.shape
    extent = T.ExtentTransform((0, 0, 60, 40), (20, 30)).apply_image(frame)  # default interp=LINEAR
    assert extent.shape == (20, 30, 3), extent.shape
    frames, tfms = apply_clip_augmentations([ResizeShortestEdgeClip(20, 100)], [frame, frame])
    assert [f.shape for f in frames] == [(20, 30, 3)] * 2, [f.shape for f in frames]
    masks = np.zeros((40, 60, 2), np.uint8)
    masks[10:30, 20:40, 0] = 1
    warped = warp_masks(masks, T.TransformList([tfms[0]]))
    assert warped.shape == (20, 30, 2) and warped[..., 0].sum() == 100, (warped.shape, warped.sum())
    print("ok")
    """
)


def test_detectron2_resize_and_clip_augmentations_run_without_pil_linear():
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LINEAR], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
