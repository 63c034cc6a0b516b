#!/usr/bin/env python
"""Produce the derived json files the training configs expect (the original's convert_dataset.py).

`coco`: COCO instances restricted to the classes with a counterpart in each video dataset, written to
coco/annotations/coco2{ytvis2019,ytvis2021,ovis}_{train,val}.json (the coco2* datasets).
`split`: splits ytvis_2019/, ytvis_2021/ and ovis/ train.json into train_sub.json (the *_train
datasets) and valid_sub.json (the *_dev datasets) as the original does.

    python tools/convert_coco_to_ytvis_categories.py coco [--root datasets] [--targets ytvis2019 ovis]
    python tools/convert_coco_to_ytvis_categories.py split [--root datasets] [--datasets ovis]
"""

from __future__ import annotations

import argparse
import json
import os

from mdqe.data.datasets.categories import COCO_TO_OVIS, COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021
from mdqe.data.datasets.convert import restrict_coco_to_categories, split_train_sub
from mdqe.data.datasets.ytvis import read_json

COCO_MAPS = {"ytvis2019": COCO_TO_YTVIS_2019, "ytvis2021": COCO_TO_YTVIS_2021, "ovis": COCO_TO_OVIS}
VIDEO_FOLDERS = ("ytvis_2019", "ytvis_2021", "ovis")


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise SystemExit(f"{path} does not exist; see datasets/README.md for where to download it")
    return read_json(path)


def _save(data: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # never leave a truncated json behind


def convert_coco(root: str, targets: list[str], splits: list[str]) -> None:
    for split in splits:
        coco = _load(os.path.join(root, f"coco/annotations/instances_{split}2017.json"))
        for target in targets:
            out = restrict_coco_to_categories(coco, COCO_MAPS[target])
            path = os.path.join(root, f"coco/annotations/coco2{target}_{split}.json")
            _save(out, path)
            print(f"COCO {split} -> {target}: kept {len(out['annotations'])} of {len(coco['annotations'])} "
                  f"annotations, wrote {path}")  # fmt: skip


def split_videos(root: str, folders: list[str], valid_fraction: float) -> None:
    for folder in folders:
        data = _load(os.path.join(root, folder, "train.json"))
        train_sub, valid_sub = split_train_sub(data, valid_fraction, is_ovis=folder == "ovis")
        for name, part in (("train_sub", train_sub), ("valid_sub", valid_sub)):
            _save(part, os.path.join(root, folder, f"{name}.json"))
        sizes = f"train_sub {len(train_sub['videos'])} videos, valid_sub {len(valid_sub['videos'])} videos"
        print(f"{folder}: {sizes}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"), help="datasets root")
    sub = p.add_subparsers(dest="command", required=True)
    coco = sub.add_parser("coco", help="write coco/annotations/coco2<target>_<split>.json")
    coco.add_argument("--targets", nargs="+", choices=sorted(COCO_MAPS), default=sorted(COCO_MAPS))
    coco.add_argument("--splits", nargs="+", choices=["train", "val"], default=["train", "val"])
    split = sub.add_parser("split", help="write <dataset>/train_sub.json and valid_sub.json")
    split.add_argument("--datasets", nargs="+", choices=VIDEO_FOLDERS, default=list(VIDEO_FOLDERS))
    split.add_argument("--valid-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.command == "coco":
        convert_coco(args.root, args.targets, args.splits)
    else:
        split_videos(args.root, args.datasets, args.valid_fraction)


if __name__ == "__main__":
    main()
