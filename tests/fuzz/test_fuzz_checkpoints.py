"""Fuzzing the checkpoint loader (`read_checkpoint`, through `mdqe.checkpoint_io`): model-zoo pickles of
every protocol, torch zip files and Python 2 style pickles with bytes changed, cut or replaced. Accepted: a
checkpoint of named tensors, or one `CheckpointError` line naming the file."""

from __future__ import annotations

import io
import pickle

import numpy as np
import torch
from _fuzzing import bounded, fuzz, mutated_bytes, outcome, scratch_folder
from hypothesis import event, given
from hypothesis import strategies as st

from mdqe.checkpoint import read_checkpoint
from mdqe.checkpoint_io import CheckpointError

_ARRAYS = {
    "stem.conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
    "stem.conv1.norm.bias": np.arange(2, dtype=np.float64),
    "res2.0.shortcut.norm.num_batches_tracked": np.array(7, np.int64),
}
PICKLES = [
    pickle.dumps({"model": _ARRAYS, "__author__": "Detectron2 Model Zoo", "x": (1, "a", None)}, protocol=p)
    for p in (0, 2, 4, 5)
]
_buffer = io.BytesIO()
torch.save({"model": {k: torch.as_tensor(v) for k, v in _ARRAYS.items()}, "iteration": 3}, _buffer)
TORCH_FILE = _buffer.getvalue()

CHECKPOINTS = st.one_of(
    st.sampled_from(PICKLES).flatmap(mutated_bytes).map(lambda b: ("model.pkl", b)),
    mutated_bytes(TORCH_FILE).map(lambda b: ("model.pth", b)),
    st.binary(max_size=256).map(lambda b: ("model.pkl", b)),
)


@fuzz
@given(CHECKPOINTS)
def test_a_changed_checkpoint_loads_as_weights_or_gives_one_clear_error(tmp_path, checkpoint):
    name, data = checkpoint
    scratch = scratch_folder(tmp_path)
    path = scratch / name
    path.write_bytes(data)
    loaded = bounded(lambda: read_checkpoint(str(path)), scratch, (CheckpointError,))
    event(outcome(loaded))
    if isinstance(loaded, CheckpointError):
        assert "\n" not in str(loaded) and str(path) in str(loaded), str(loaded)
    else:
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded["model"].items())
