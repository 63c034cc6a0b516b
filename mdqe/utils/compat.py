"""Compatibility of detectron2 v0.6 with the current Python stack, applied when `mdqe` is imported.

detectron2 v0.6 (the release MDQE builds on) predates Pillow 10, which removed `PIL.Image.LINEAR`:
`detectron2.data.transforms.ExtentTransform` uses it as a default argument, so with Pillow >= 10 importing
`detectron2.data` (and with it `detectron2.engine`, `detectron2.modeling`, ...) raises AttributeError.
`apply()` restores the name as the alias of `BILINEAR` that it was in Pillow < 10; it must run before
detectron2's data package is first imported, hence from `mdqe/__init__.py`. A script that imports
detectron2's data, engine or modeling packages before `mdqe` needs `import mdqe` first; pytest runs take
`-p mdqe.utils.compat`.

What else was checked on detectron2 v0.6 with Pillow 13, numpy 2 and Python 3.12, and needs no shim for
MDQE: Pillow 10 kept the other constants detectron2 uses (NEAREST, BILINEAR, BICUBIC and the
FLIP/ROTATE/TRANSPOSE ones); numpy 2 brought back `np.bool`, which detectron2's masks use; the removed
`np.int`/`np.float`/`np.str` appear only in code MDQE does not run (the PASCAL VOC and semantic
segmentation evaluators, the dataset class histogram of `get_detection_dataset_dicts`); the only
`pkg_resources` user, `detectron2.model_zoo`, is not imported by MDQE (recent setuptools no longer ship
`pkg_resources`).
"""

from __future__ import annotations

import logging
import warnings

from PIL import Image

__all__ = ["apply"]

logger = logging.getLogger(__name__)


def apply() -> None:
    """Restore `PIL.Image.LINEAR` (= `BILINEAR`) when Pillow >= 10 removed it; idempotent."""
    with warnings.catch_warnings():  # Pillow 9 serves LINEAR with a deprecation warning: not ours to show
        warnings.simplefilter("ignore", DeprecationWarning)
        present = hasattr(Image, "LINEAR")
    if not present:
        Image.LINEAR = Image.Resampling.BILINEAR
        logger.debug("restored PIL.Image.LINEAR (removed in Pillow 10) for detectron2 v0.6")


apply()
