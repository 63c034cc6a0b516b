"""mdqe.evaluation.report with names made to be hostile: a category, video or file name holding HTML or
script is shown as text, a formula-like name does not break the plots, and frames are read only from under
the image root."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
from _ytvis_testing import dataset, gt_annotation, rect, result
from PIL import Image

from mdqe.evaluation.analysis import analyze_ytvis
from mdqe.evaluation.report import render_report

SCRIPT = "<script>alert('category')</script>"
IMAGE = '<img src=x onerror="alert(1)">'
FORMULA = r"$\frac{broken$"


class Elements(HTMLParser):
    """The tags and attributes of a page, and the text of its table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def hostile_report(tmp_path, file_names: list[str]) -> str:
    a, b = rect(8, 8, 0, 0, 4, 4), rect(8, 8, 4, 4, 8, 8)
    gt = dataset([(1, 8, 8, 2)], [gt_annotation(1, 1, 1, [a, a]), gt_annotation(2, 1, 2, [b, b])])
    gt["videos"][0].update(id=IMAGE, file_names=file_names)
    gt["categories"] = [{"id": 1, "name": SCRIPT}, {"id": 2, "name": FORMULA}]
    for ann in gt["annotations"]:
        ann["video_id"] = IMAGE
    results = [dict(result(1, 1, 0.9, [b, b]), video_id=IMAGE)]  # a miss: the video is among the worst
    root = tmp_path / "frames"
    (root / "v").mkdir(parents=True)
    for t in range(2):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "v" / f"{t}.png")
    analysis = analyze_ytvis(gt, results)
    return render_report(analysis, gt, results, image_root=str(root), title=f"{SCRIPT}.json")


def test_hostile_category_video_and_file_names_are_text_not_markup(tmp_path):
    page = hostile_report(tmp_path, ["v/0.png", "v/1.png"])
    parser = Elements()
    parser.feed(page)
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
    assert SCRIPT in parser.cells and FORMULA in parser.cells  # the category table shows the names
    assert any(cell == IMAGE for cell in parser.cells)  # the worst-videos table shows the video id
    assert (
        sum(tag == "img" and attrs.get("src", "").startswith("data:image/png") for tag, attrs in parser.tags)
        == 4
    )


def test_a_file_name_outside_the_image_root_is_not_read_into_the_report(tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    page = hostile_report(tmp_path, ["../secret.png", str(secret)])
    assert "file name &#x27;../secret.png&#x27; is outside the image root" in page
    assert "data:image/png" not in page


def test_a_mask_whose_runs_do_not_fill_the_frame_is_not_decoded_into_the_strip(tmp_path):
    a = rect(8, 8, 0, 0, 4, 4)
    gt = dataset([(1, 8, 8, 2)], [gt_annotation(1, 1, 1, [a, a])])
    gt["videos"][0]["file_names"] = ["v/0.png", "v/1.png"]
    # one run of 2**30 pixels: pycocotools' decode would write 1 GiB past the 8 x 8 mask
    results = [result(1, 2, 0.9, [a, a]), result(1, 1, 0.5, [a, None])]
    results[1]["segmentations"][0] = {"size": [8, 8], "counts": "PPPPPP1"}
    root = tmp_path / "frames"
    (root / "v").mkdir(parents=True)
    for t in range(2):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "v" / f"{t}.png")
    page = render_report(analyze_ytvis(gt, results), gt, results, image_root=str(root))
    assert page.count('src="data:image/png') == 4
