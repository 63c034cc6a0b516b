"""Issue 23, bounded work: a zip bomb, a zip member named as a path, an RLE implying a huge mask and a deeply
nested json each get one clear error from every reader they reach (tools/eval_ytvis.py: exit 2 and one
line; tools/check_submission.py: the problem in its report; the dataset loader and validate_dataset),
within SECONDS and PEAK_BYTES of traced allocations, whatever the file would expand to. An RLE whose runs
imply a huge mask is refused by every reader that decodes masks."""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mdqe.data.datasets.ytvis import DatasetFormatError, load_ytvis_json
from mdqe.data.validation import validate_ytvis_dataset

SECONDS = 2.0  # the refusal of each case, in-process, on a shared 2-core machine (measured: < 0.1 s)
PEAK_BYTES = 32 << 20  # Python and numpy allocations while refusing (measured: < 3 MiB)

GT = {
    "videos": [{"id": 1, "height": 8, "width": 8, "length": 2, "file_names": ["v/0.jpg", "v/1.jpg"]}],
    "categories": [{"id": 1, "name": "thing"}],
    "annotations": [
        {
            "id": 1,
            "video_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentations": [{"size": [8, 8], "counts": "04400000P1"}] * 2,
        }
    ],
}
HUGE_RUN = "PPPPPP1"  # COCO's compressed RLE of one run of 2**30 pixels
RESULTS = [
    {
        "video_id": 1,
        "category_id": 1,
        "score": 0.9,
        "segmentations": [{"size": [8, 8], "counts": "04400000P1"}] * 2,
    }
]


def bounded(call: Callable[[], Any]) -> tuple[Any, float, int]:
    """`call()`'s value (or the exception it raised), its seconds and its peak of traced allocations."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = call()
    except Exception as e:
        value = e
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, seconds, peak


def _zip(members: dict[str, bytes], declared: int | None = None) -> bytes:
    """A deflated zip; with `declared`, its first member's headers claim that uncompressed size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    data = bytearray(buffer.getvalue())
    if declared is not None:
        struct.pack_into("<I", data, 22, declared)
        struct.pack_into("<I", data, data.index(b"PK\x01\x02") + 24, declared)
    return bytes(data)


RESULTS_FILES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    # name: (file name, content, what the one-line error says)
    "zip bomb (3 GiB declared)": (
        "results.zip",
        lambda: _zip({"results.json": b"[" + b" " * 4096 + b"]"}, declared=3 << 30),
        "member 'results.json': declared size in bytes 3,221,225,472 is past the limit 2,147,483,648",
    ),
    "zip bomb (header lies)": (
        "results.zip",
        lambda: _zip({"results.json": b"[" + b" " * (64 << 20) + b"]"}, declared=4096),
        "Bad CRC-32 for file 'results.json'",
    ),
    "path-named member": (
        "results.zip",
        lambda: _zip({"../../results.json": json.dumps(RESULTS).encode()}),
        "the archive member '../../results.json' is a path out of the archive",
    ),
    "huge RLE": (
        "results.json",
        # an RLE of a 2**20 x 2**20 mask in an 8 x 8 video: a TiB to decode
        lambda: json.dumps(
            [dict(RESULTS[0], segmentations=[{"size": [1 << 20, 1 << 20], "counts": HUGE_RUN}, None])]
        ).encode(),
        "segmentation of frame 0 has size [1048576, 1048576], the video is [8, 8]",
    ),
    "deep json": (
        "results.json",
        lambda: b"[" * 1_000_000 + b"]" * 1_000_000,
        "json nesting depth 1,000,000 is past the limit 64",
    ),
}


@pytest.fixture
def gt_file(tmp_path) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    return path


@pytest.mark.parametrize("case", list(RESULTS_FILES))
def test_eval_ytvis_refuses_a_hostile_results_file_in_one_line_within_bounds(
    tmp_path, gt_file, capsys, monkeypatch, case
):
    monkeypatch.setenv("MDQE_LIGHT_IMPORT", "1")  # what eval_ytvis sets on import, undone after the test
    from tools import eval_ytvis

    name, content, message = RESULTS_FILES[case]
    path = tmp_path / name
    path.write_bytes(content())
    code, seconds, peak = bounded(lambda: eval_ytvis.main(["--gt", str(gt_file), "--results", str(path)]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(path) in lines[0] and message in lines[0], lines
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)


# one run of 2**30 pixels in an 8 x 8 frame: pycocotools' decode would write 1 GiB past the mask.
# check_submission and the dataset readers decode every run and refuse it; eval_ytvis never decodes a mask
# (its metrics use run-based operations, as the official API's) and its report does not draw such a mask.
RUNS_PAST_THE_FRAME = json.dumps(
    [dict(RESULTS[0], segmentations=[{"size": [8, 8], "counts": HUGE_RUN}, None])]
)


def test_eval_ytvis_evaluates_runs_past_the_frame_without_decoding_them(
    tmp_path, gt_file, capsys, monkeypatch
):
    monkeypatch.setenv("MDQE_LIGHT_IMPORT", "1")
    from tools import eval_ytvis

    path = tmp_path / "results.json"
    path.write_text(RUNS_PAST_THE_FRAME)
    code, seconds, peak = bounded(
        lambda: eval_ytvis.main(["--gt", str(gt_file), "--results", str(path), "--json"])
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["AP"] == 0
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)


SUBMISSION_FILES = {
    **RESULTS_FILES,
    "runs past the frame": (
        "results.json",
        RUNS_PAST_THE_FRAME.encode,
        "does not decode: run lengths add up to",
    ),
}


@pytest.mark.parametrize("case", list(SUBMISSION_FILES))
def test_check_submission_reports_a_hostile_results_file_within_bounds(tmp_path, gt_file, capsys, case):
    from tools import check_submission

    name, content, message = SUBMISSION_FILES[case]
    path = tmp_path / name
    path.write_bytes(content())
    code, seconds, peak = bounded(
        lambda: check_submission.main(["--results", str(path), "--gt", str(gt_file)])
    )
    out = capsys.readouterr().out
    assert code == 1 and message in out, out
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)


DATASET_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "huge frame size": (
        lambda: json.dumps({**GT, "videos": [dict(GT["videos"][0], height=1 << 20, width=1 << 20)]}).encode(),
        "has 1048576 x 1048576 = 1,099,511,627,776 pixels per frame, past the limit 67,108,864",
    ),
    "huge RLE": (
        lambda: json.dumps(
            {
                **GT,
                "annotations": [
                    dict(GT["annotations"][0], segmentations=[{"size": [8, 8], "counts": HUGE_RUN}, None])
                ],
            }
        ).encode(),
        "frame 0, field 'segmentations': the RLE does not decode: run lengths add up to",
    ),
    "deep json": (
        lambda: b"[" * 1_000_000 + b"]" * 1_000_000,
        "json nesting depth 1,000,000 is past the limit 64",
    ),
}


@pytest.mark.parametrize("case", list(DATASET_FILES))
def test_the_dataset_readers_refuse_a_hostile_json_within_bounds(tmp_path, case):
    content, message = DATASET_FILES[case]
    path = tmp_path / "train.json"
    path.write_bytes(content())
    error, seconds, peak = bounded(lambda: load_ytvis_json(str(path), str(tmp_path)))
    assert isinstance(error, DatasetFormatError) and message in str(error) and "\n" not in str(error)
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)
    report, seconds, peak = bounded(
        lambda: validate_ytvis_dataset(str(path), str(tmp_path), decode_frames=False)
    )
    assert any(message in problem for problem in report.problems), report.problems
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak)
