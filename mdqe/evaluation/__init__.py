"""YouTube-VIS evaluation: the metric code (`ytvis_metrics`, numpy + pycocotools only) and the
detectron2 `YTVISEvaluator` that writes CodaLab results."""

from .ytvis_evaluator import YTVISEvaluator, atomic_write, instances_to_results
from .ytvis_metrics import METRIC_NAMES, YTVISEvalResult, evaluate_ytvis, video_iou

__all__ = [
    "METRIC_NAMES",
    "YTVISEvalResult",
    "YTVISEvaluator",
    "atomic_write",
    "evaluate_ytvis",
    "instances_to_results",
    "video_iou",
]
