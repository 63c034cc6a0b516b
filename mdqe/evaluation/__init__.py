"""YouTube-VIS evaluation: the metric code (`ytvis_metrics`, `analysis`, `breakdown`, `occlusion`,
`report`: numpy, pycocotools and matplotlib only) and the detectron2 `YTVISEvaluator` that writes
CodaLab results.

Names are imported on first use (module `__getattr__`), so `import mdqe.evaluation.ytvis_metrics` and
the names of the metric modules need neither torch nor detectron2; `YTVISEvaluator` imports them.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it
_NAMES = {
    "YTVISEvaluator": "ytvis_evaluator",
    "atomic_write": "ytvis_evaluator",
    "instances_to_results": "ytvis_evaluator",
    "METRIC_NAMES": "ytvis_metrics",
    "YTVISEvalResult": "ytvis_metrics",
    "evaluate_ytvis": "ytvis_metrics",
    "video_iou": "ytvis_metrics",
    "YTVISAnalysis": "analysis",
    "analyze_ytvis": "analysis",
    "evaluate_ytvis_2022": "analysis",
    "split_long_videos": "analysis",
    "ErrorBreakdown": "breakdown",
    "error_breakdown": "breakdown",
    "write_report": "report",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
