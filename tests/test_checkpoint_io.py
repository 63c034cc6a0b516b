"""mdqe.checkpoint_io through read_checkpoint: a checkpoint never runs code when it is loaded, hostile files
get one clear error, and every real layout (model-zoo .pkl of Python 2 and 3, Caffe2 blobs, the original's
.pth, torchvision / Swin weights, our own checkpoints with optimizer and scheduler state) still loads."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from mdqe.checkpoint import MDQECheckpointer, read_checkpoint
from mdqe.checkpoint_io import UnreadableCheckpointError, UnsafeCheckpointError, load_checkpoint_file
from tests.conftest import FIXTURES_DIR

SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)


class RunsACommand:
    """Unpickled by a full unpickler, this creates `marker`: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def assert_one_line(error: Exception, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_pkl_that_would_run_a_command_is_refused_naming_the_file_and_the_global(tmp_path, protocol):
    marker, path = tmp_path / "marker", tmp_path / "model_final.pkl"
    weights = {"model": {"w": np.zeros(3, np.float32)}, "__author__": RunsACommand(marker)}
    path.write_bytes(pickle.dumps(weights, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as error:
        read_checkpoint(str(path))
    assert_one_line(error.value, str(path), SYSTEM, "never runs code")
    assert not marker.exists()


def test_a_pth_that_would_run_a_command_is_refused_naming_the_file_and_the_global(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(3)}, "extra": RunsACommand(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        read_checkpoint(str(path))
    assert_one_line(error.value, str(path), SYSTEM, "never runs code")
    assert not marker.exists()


def _arrays() -> dict[str, np.ndarray]:
    """One array of each numeric kind and layout a model-zoo file may hold."""
    return {
        "stem.conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7,
        "stem.conv1.norm.running_var": np.linspace(1, 2, 5, dtype=np.float64),
        "half": np.arange(6, dtype=np.float16).reshape(2, 3),
        "big_endian": np.arange(4, dtype=">f4"),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
        "flags": np.array([True, False, True]),
        "bytes": np.arange(5, dtype=np.uint8),
        "scalar_array": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }


def assert_same_weights(state: dict[str, torch.Tensor], arrays: dict[str, np.ndarray]) -> None:
    assert set(state) == set(arrays)
    for key, array in arrays.items():
        expected = torch.as_tensor(array.astype(array.dtype.newbyteorder("=")))
        assert state[key].dtype == expected.dtype and torch.equal(state[key], expected), key


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_model_zoo_pkl_loads_unchanged(tmp_path, protocol):
    path = tmp_path / "R-50.pkl"
    arrays = _arrays()
    zoo = {"model": arrays, "__author__": "Detectron2 Model Zoo", "epoch": np.int64(12), "note": ("a", 1.5)}
    path.write_bytes(pickle.dumps(zoo, protocol=protocol))
    checkpoint = read_checkpoint(str(path))
    assert_same_weights(checkpoint["model"], arrays)
    assert checkpoint["__author__"] == "Detectron2 Model Zoo" and checkpoint["note"] == ("a", 1.5)
    assert checkpoint["epoch"] == 12 and isinstance(checkpoint["epoch"], np.int64)


def _py2_str(text: bytes) -> bytes:
    return pickle.BINSTRING + struct.pack("<i", len(text)) + text


def _py2_tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _py2_int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _py2_array(array: np.ndarray) -> bytes:
    """An array as numpy under Python 2 pickles it: _reconstruct, then a state holding str data."""
    order, code = array.dtype.str[0], array.dtype.str[1:]
    dtype = (
        pickle.GLOBAL + b"numpy\ndtype\n"
        + _py2_tuple(_py2_str(code.encode()), _py2_int(0), _py2_int(1)) + pickle.REDUCE
        + _py2_tuple(_py2_int(3), _py2_str(order.encode()), pickle.NONE, pickle.NONE, pickle.NONE,
                     _py2_int(-1), _py2_int(-1), _py2_int(0))
        + pickle.BUILD
    )  # fmt: skip
    return (
        pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n"
        + _py2_tuple(pickle.GLOBAL + b"numpy\nndarray\n", _py2_tuple(_py2_int(0)), _py2_str(b"b"))
        + pickle.REDUCE
        + _py2_tuple(_py2_int(1), _py2_tuple(*map(_py2_int, array.shape)), dtype, pickle.NEWFALSE,
                     _py2_str(array.tobytes()))
        + pickle.BUILD
    )  # fmt: skip


def python2_model_zoo_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """A {"blobs": {name: array}} file as Detectron (Python 2) wrote its ImageNet backbones."""
    blobs = b"".join(_py2_str(name.encode()) + _py2_array(a) for name, a in arrays.items())
    body = pickle.EMPTY_DICT + pickle.MARK + _py2_str(b"blobs") + pickle.EMPTY_DICT + pickle.MARK + blobs
    return pickle.PROTO + b"\x02" + body + pickle.SETITEMS + pickle.SETITEMS + pickle.STOP


def test_a_python2_detectron_pkl_loads_with_name_matching_and_without_momenta(tmp_path):
    arrays = {
        "res2_0_branch2a_w": np.arange(8, dtype=np.float32).reshape(2, 4),
        "res2_0_branch2a_w_momentum": np.ones((2, 4), np.float32),
        "fc1000_b": np.arange(3, dtype=np.float64),
    }
    data = python2_model_zoo_pickle(arrays)
    full = pickle.loads(data, encoding="latin1")["blobs"]  # the file is a real numpy pickle
    assert all(np.array_equal(full[k], a) for k, a in arrays.items())
    path = tmp_path / "R-50.pkl"
    path.write_bytes(data)
    checkpoint = read_checkpoint(str(path))
    assert checkpoint["__author__"] == "Caffe2" and checkpoint["matching_heuristics"]
    del arrays["res2_0_branch2a_w_momentum"]
    assert_same_weights(checkpoint["model"], arrays)


def _gen_weights():
    spec = importlib.util.spec_from_file_location("gen_weights", FIXTURES_DIR / "gen_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkpoint_of_the_original_layout_loads_unchanged(tmp_path):
    gen_weights = _gen_weights()
    layout = gen_weights.read_layout(FIXTURES_DIR / "state_dict_R50_ovis_360.tsv")
    state = gen_weights.make_state_dict(layout, 1, integers="zeros")
    path = tmp_path / "mdqe_r50_ovis.pth"
    torch.save({"model": state}, path)
    loaded = read_checkpoint(str(path))["model"]
    assert list(loaded) == list(state) and len(loaded) == 762
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in state.items())


def test_torchvision_and_official_swin_weights_load(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().state_dict()  # an OrderedDict with `_metadata`, as downloaded
    torch.save(resnet, tmp_path / "resnet18.pth")
    assert list(load_checkpoint_file(str(tmp_path / "resnet18.pth"))._metadata) == list(resnet._metadata)
    assert all(
        torch.equal(read_checkpoint(str(tmp_path / "resnet18.pth"))["model"][k], v) for k, v in resnet.items()
    )
    swin = collections.OrderedDict(
        [
            ("patch_embed.proj.weight", torch.randn(8, 3, 4, 4)),
            ("layers.0.blocks.0.attn.relative_position_index", torch.arange(9)),
        ]
    )
    torch.save({"model": swin}, tmp_path / "swin.pth")
    loaded = read_checkpoint(str(tmp_path / "swin.pth"))["model"]
    assert all(torch.equal(loaded[k], v) for k, v in swin.items())


def test_resume_restores_the_optimizer_and_scheduler_state(tmp_path):
    def build():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    for _ in range(3):
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    MDQECheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler).save(
        "model_0000002", iteration=2
    )
    fresh, fresh_optimizer, fresh_scheduler = build()
    checkpointer = MDQECheckpointer(
        fresh, str(tmp_path), optimizer=fresh_optimizer, scheduler=fresh_scheduler
    )
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    saved, restored = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert all(torch.equal(saved[p]["exp_avg_sq"], restored[p]["exp_avg_sq"]) for p in saved)
    assert fresh_scheduler.state_dict() == scheduler.state_dict()


# ---- hostile files ---------------------------------------------------------------------------------


def _crafted(*ops: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(ops) + pickle.STOP


HUGE_BYTES = _crafted(pickle.GLOBAL + b"builtins\nbytes\n", _py2_tuple(_py2_int(1 << 30)), pickle.REDUCE)
# A float32 dtype whose state sets numpy's "holds Python objects" flags: its bytes would be pointers.
OBJECT_FLAGS = _crafted(
    pickle.GLOBAL + b"numpy\ndtype\n", _py2_tuple(_py2_str(b"f8"), _py2_int(0), _py2_int(1)), pickle.REDUCE,
    _py2_tuple(_py2_int(3), _py2_str(b"<"), pickle.NONE, pickle.NONE, pickle.NONE, _py2_int(-1), _py2_int(-1),
               _py2_int(63)),
    pickle.BUILD,
)  # fmt: skip
# One 1 MiB string shared (memoised) by 64 arrays: 64 MiB of arrays from a 1 MiB file.
_SHARED = pickle.BINPUT + b"\x01"
SHARED_DATA = _crafted(
    pickle.MARK,
    *[
        pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n"
        + _py2_tuple(pickle.GLOBAL + b"numpy\nndarray\n", _py2_tuple(_py2_int(0)), _py2_str(b"b"))
        + pickle.REDUCE
        + _py2_tuple(_py2_int(1), _py2_tuple(_py2_int(1 << 20)), pickle.GLOBAL + b"numpy\ndtype\n"
                     + _py2_tuple(_py2_str(b"u1"), _py2_int(0), _py2_int(1)) + pickle.REDUCE, pickle.NEWFALSE,
                     _py2_str(b"\0" * (1 << 20)) + _SHARED if i == 0 else pickle.BINGET + b"\x01")
        + pickle.BUILD
        for i in range(64)
    ],
    pickle.LIST,
)  # fmt: skip


def _self_referencing() -> bytes:
    looped: list = []
    looped.append(looped)
    return pickle.dumps({"model": looped}, protocol=2)


HOSTILE_PKL = {
    "object array": (pickle.dumps({"model": {"w": np.array([1, "x"], dtype=object)}}), "not a numeric dtype"),
    "string array": (pickle.dumps({"model": {"w": np.array(["abc"])}}), "not a numeric dtype"),
    "structured array": (pickle.dumps({"model": {"w": np.zeros(2, [("a", "f4")])}}), "not a numeric dtype"),
    "bytes(2**30)": (HUGE_BYTES, "bytes() called with int"),
    "object flags": (OBJECT_FLAGS, "not that of a plain numeric dtype"),
    "shared data": (SHARED_DATA, "hold more bytes than the file"),
    "self reference": (_self_referencing(), "refers to itself"),
    "truncated": (pickle.dumps({"model": _arrays()})[:300], "it is truncated or not a pickle"),
    "a function": (pickle.dumps({"model": {"w": np.zeros(1)}, "f": np.save}), "numpy.save"),
    # found by tests/fuzz: 5 bytes that made the C unpickler allocate 64 MiB (4 GiB with 0xff)
    "length past the file": (b"B\x00\x00\x00\x04", "expected 67108864 bytes in a bytes4, but only 0 remain"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PKL))
def test_a_hostile_pkl_gets_one_clear_error(tmp_path, case):
    data, fragment = HOSTILE_PKL[case]
    path = tmp_path / "weights.pkl"
    path.write_bytes(data)
    with pytest.raises(UnreadableCheckpointError) as error:
        read_checkpoint(str(path))
    assert_one_line(error.value, str(path), fragment)


def test_a_pth_view_far_larger_than_its_storage_is_refused(tmp_path):
    path = tmp_path / "expanded.pth"
    torch.save({"model": {"w": torch.zeros(1).expand(1 << 40)}}, path)  # 4 TiB on the first copy
    with pytest.raises(UnreadableCheckpointError) as error:
        read_checkpoint(str(path))
    assert_one_line(error.value, str(path), "'w' spans more elements than it stores")


def test_a_pth_whose_members_inflate_past_the_file_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}}, buffer)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("bomb/data/9", b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnreadableCheckpointError) as error:
        read_checkpoint(str(path))
    assert_one_line(error.value, str(path), "declare 67,1")


def test_a_pth_of_the_legacy_format_loads(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"model": {"w": torch.arange(3.0)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(str(path))["model"]["w"], torch.arange(3.0))


def test_a_pth_stating_a_length_past_the_file_allocates_nothing(tmp_path):
    # found by tests/fuzz: read from the file, these 5 bytes made Python allocate 64 MiB before failing
    path = tmp_path / "model.pth"
    path.write_bytes(b"X\x00\x00\x00\x04")
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableCheckpointError, match="truncated or not a PyTorch checkpoint"):
            read_checkpoint(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
