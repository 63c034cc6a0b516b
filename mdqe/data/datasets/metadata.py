"""Decisions taken from a dataset's registered metadata (never from its name).

- `is_image_dataset`: a COCO-format image dataset (`evaluator_type` "coco") is trained on as
  pseudo-clips, evaluated by image inference and detectron2's COCOEvaluator; anything else is a video
  dataset. The mapper, the model and the evaluator all ask this one function.
- `source_to_target_classes`: the class map from an auxiliary training dataset (e.g. COCO pseudo-clips)
  to the target video dataset, from the `video_category_map` the source was registered with
  (`register_coco_video_instances(..., category_map=...)`).
"""

from __future__ import annotations

from detectron2.data import MetadataCatalog

__all__ = ["is_image_dataset", "source_to_target_classes"]


def is_image_dataset(dataset_name: str) -> bool:
    """Whether `dataset_name` is registered as a COCO-format image dataset (`evaluator_type` "coco")."""
    return MetadataCatalog.get(dataset_name).get("evaluator_type") == "coco"


def source_to_target_classes(src_dataset_name: str, tgt_dataset_name: str) -> dict[int, int] | None:
    """Contiguous class of `src_dataset_name` -> contiguous class of `tgt_dataset_name`, or None when
    they share one category table. Classes missing from the map have no target class.

    The map comes from the source's metadata `video_category_map` (source dataset category id -> target
    dataset category id).
    """
    src_meta, tgt_meta = MetadataCatalog.get(src_dataset_name), MetadataCatalog.get(tgt_dataset_name)
    if src_meta.get("thing_classes") == tgt_meta.get("thing_classes"):
        return None
    table = src_meta.get("video_category_map")
    if table is None:
        raise ValueError(
            f"no category map from '{src_dataset_name}' to the target dataset '{tgt_dataset_name}' "
            "(DATASETS.TRAIN[-1]) and their categories differ: register the source with "
            "register_coco_video_instances(..., category_map={source id: target id})"
        )
    src_ids = src_meta.thing_dataset_id_to_contiguous_id
    tgt_ids = tgt_meta.get("thing_dataset_id_to_contiguous_id", {})
    unknown = sorted(t for t in table.values() if t not in tgt_ids)
    if unknown:
        raise ValueError(
            f"the category map of '{src_dataset_name}' names category ids {unknown} that the target "
            f"dataset '{tgt_dataset_name}' does not have"
        )
    return {src_ids[s]: tgt_ids[t] for s, t in table.items() if s in src_ids}
