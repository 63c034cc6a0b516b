"""Category tables of YouTube-VIS 2019, YouTube-VIS 2021 and OVIS, and the COCO-to-video class maps.

Ids, names and colours are those of the original MDQE release (and so of the official annotation
files): checkpoints and result files depend on them.
"""

from __future__ import annotations

from typing import Any

# (dataset category id, name, RGB colour for visualisation)
YTVIS_2019_CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "person", (220, 20, 60)),
    (2, "giant_panda", (0, 82, 0)),
    (3, "lizard", (119, 11, 32)),
    (4, "parrot", (165, 42, 42)),
    (5, "skateboard", (134, 134, 103)),
    (6, "sedan", (0, 0, 142)),
    (7, "ape", (255, 109, 65)),
    (8, "dog", (0, 226, 252)),
    (9, "snake", (5, 121, 0)),
    (10, "monkey", (0, 60, 100)),
    (11, "hand", (250, 170, 30)),
    (12, "rabbit", (100, 170, 30)),
    (13, "duck", (179, 0, 194)),
    (14, "cat", (255, 77, 255)),
    (15, "cow", (120, 166, 157)),
    (16, "fish", (73, 77, 174)),
    (17, "train", (0, 80, 100)),
    (18, "horse", (182, 182, 255)),
    (19, "turtle", (0, 143, 149)),
    (20, "bear", (174, 57, 255)),
    (21, "motorbike", (0, 0, 230)),
    (22, "giraffe", (72, 0, 118)),
    (23, "leopard", (255, 179, 240)),
    (24, "fox", (0, 125, 92)),
    (25, "deer", (209, 0, 151)),
    (26, "owl", (188, 208, 182)),
    (27, "surfboard", (145, 148, 174)),
    (28, "airplane", (106, 0, 228)),
    (29, "truck", (0, 0, 70)),
    (30, "zebra", (199, 100, 0)),
    (31, "tiger", (166, 196, 102)),
    (32, "elephant", (110, 76, 0)),
    (33, "snowboard", (133, 129, 255)),
    (34, "boat", (0, 0, 192)),
    (35, "shark", (183, 130, 88)),
    (36, "mouse", (130, 114, 135)),
    (37, "frog", (107, 142, 35)),
    (38, "eagle", (0, 228, 0)),
    (39, "earless_seal", (174, 255, 243)),
    (40, "tennis_racket", (255, 208, 186)),
)

YTVIS_2021_CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "airplane", (106, 0, 228)),
    (2, "bear", (174, 57, 255)),
    (3, "bird", (255, 109, 65)),
    (4, "boat", (0, 0, 192)),
    (5, "car", (0, 0, 142)),
    (6, "cat", (255, 77, 255)),
    (7, "cow", (120, 166, 157)),
    (8, "deer", (209, 0, 151)),
    (9, "dog", (0, 226, 252)),
    (10, "duck", (179, 0, 194)),
    (11, "earless_seal", (174, 255, 243)),
    (12, "elephant", (110, 76, 0)),
    (13, "fish", (73, 77, 174)),
    (14, "flying_disc", (250, 170, 30)),
    (15, "fox", (0, 125, 92)),
    (16, "frog", (107, 142, 35)),
    (17, "giant_panda", (0, 82, 0)),
    (18, "giraffe", (72, 0, 118)),
    (19, "horse", (182, 182, 255)),
    (20, "leopard", (255, 179, 240)),
    (21, "lizard", (119, 11, 32)),
    (22, "monkey", (0, 60, 100)),
    (23, "motorbike", (0, 0, 230)),
    (24, "mouse", (130, 114, 135)),
    (25, "parrot", (165, 42, 42)),
    (26, "person", (220, 20, 60)),
    (27, "rabbit", (100, 170, 30)),
    (28, "shark", (183, 130, 88)),
    (29, "skateboard", (134, 134, 103)),
    (30, "snake", (5, 121, 0)),
    (31, "snowboard", (133, 129, 255)),
    (32, "squirrel", (188, 208, 182)),
    (33, "surfboard", (145, 148, 174)),
    (34, "tennis_racket", (255, 208, 186)),
    (35, "tiger", (166, 196, 102)),
    (36, "train", (0, 80, 100)),
    (37, "truck", (0, 0, 70)),
    (38, "turtle", (0, 143, 149)),
    (39, "whale", (0, 228, 0)),
    (40, "zebra", (199, 100, 0)),
)

# The 2022 release keeps the 2021 classes (and training set); its validation set adds long videos.
YTVIS_2022_CATEGORIES = YTVIS_2021_CATEGORIES

OVIS_CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "Person", (220, 20, 60)),
    (2, "Bird", (0, 82, 0)),
    (3, "Cat", (119, 11, 32)),
    (4, "Dog", (165, 42, 42)),
    (5, "Horse", (134, 134, 103)),
    (6, "Sheep", (0, 0, 142)),
    (7, "Cow", (255, 109, 65)),
    (8, "Elephant", (0, 226, 252)),
    (9, "Bear", (5, 121, 0)),
    (10, "Zebra", (0, 60, 100)),
    (11, "Giraffe", (250, 170, 30)),
    (12, "Poultry", (100, 170, 30)),
    (13, "Giant_panda", (179, 0, 194)),
    (14, "Lizard", (255, 77, 255)),
    (15, "Parrot", (120, 166, 157)),
    (16, "Monkey", (73, 77, 174)),
    (17, "Rabbit", (0, 80, 100)),
    (18, "Tiger", (182, 182, 255)),
    (19, "Fish", (0, 143, 149)),
    (20, "Turtle", (174, 57, 255)),
    (21, "Bicycle", (0, 0, 230)),
    (22, "Motorcycle", (72, 0, 118)),
    (23, "Airplane", (255, 179, 240)),
    (24, "Boat", (0, 125, 92)),
    (25, "Vehical", (209, 0, 151)),  # sic: the official OVIS spelling
)

# COCO category id -> video dataset category id (both are dataset ids, not contiguous ones).
# COCO classes missing from a map have no counterpart and are dropped from pseudo-clips.
COCO_TO_YTVIS_2019: dict[int, int] = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32,
    23: 20, 24: 30, 25: 22, 35: 33, 36: 33, 41: 5, 42: 27, 43: 40,
}  # fmt: skip
COCO_TO_YTVIS_2021: dict[int, int] = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12,
    23: 2, 24: 40, 25: 18, 34: 14, 35: 31, 36: 31, 41: 29, 42: 33, 43: 34,
}  # fmt: skip
# As released: COCO "bird" (16) has no entry although OVIS has "Bird"; car, bus and truck -> "Vehical".
COCO_TO_OVIS: dict[int, int] = {
    1: 1, 2: 21, 3: 25, 4: 22, 5: 23, 6: 25, 8: 25, 9: 24, 17: 3, 18: 4, 19: 5, 20: 6, 21: 7, 22: 8,
    23: 9, 24: 10, 25: 11,
}  # fmt: skip


def instances_meta(categories: tuple[tuple[int, str, tuple[int, int, int]], ...]) -> dict[str, Any]:
    """detectron2 metadata (`thing_classes`, `thing_colors`, `thing_dataset_id_to_contiguous_id`) of a
    category table; contiguous ids follow the table order, which is sorted by dataset id."""
    return {
        "thing_classes": [name for _, name, _ in categories],
        "thing_colors": [list(color) for _, _, color in categories],
        "thing_dataset_id_to_contiguous_id": {cat_id: i for i, (cat_id, _, _) in enumerate(categories)},
    }
