"""Two CPU processes (gloo) with b clips each compute the gradients of one process with 2b clips.

Why this holds: DDP averages the processes' gradients, so every loss must be a per-process sum divided
by the global normaliser over world size. The mask and box losses divide by num_masks all-reduced over
processes / world size; the class and query-init class losses are means over equally many queries /
frames per process; the contrastive losses must divide by the all-reduced anchor count / world size.
The tiny config's frames all pad to 64 x 64, so batch composition does not change any clip's input.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from mdqe.data import register_ytvis_instances
from mdqe.data.datasets.categories import instances_meta
from mdqe.data.synthetic import SYNTHETIC_CATEGORIES
from mdqe.engine import launch
from mdqe.engine.trainer import Trainer, wrap_ddp

CLIPS_PER_PROCESS = 2


def _one_step_gradients(cfg, dataset: tuple[str, str, str], out_file: str) -> None:
    """Gradients and losses of the first iteration's batch, saved by the main process."""
    name, json_file, image_root = dataset
    if name not in DatasetCatalog.list():  # a spawned process starts with the default registrations
        register_ytvis_instances(name, instances_meta(SYNTHETIC_CATEGORIES), json_file, image_root)
    torch.manual_seed(0)
    # float64, so that the comparison sees the normalisation and not float32 summation order
    model = Trainer.build_model(cfg).double()
    model.criterion.deterministic_sampling = True
    trainable = wrap_ddp(model)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    losses = trainable(batch)
    sum(losses.values()).backward()
    gathered = comm.gather({k: v.detach() for k, v in losses.items()})
    if comm.is_main_process():
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
        torch.save({"grads": grads, "losses": gathered, "clips": len(batch)}, out_file)


@pytest.fixture(scope="module")
def gradients(tiny_cfg, tiny_video_dataset, tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("distributed")
    meta = MetadataCatalog.get(tiny_video_dataset)
    dataset = (tiny_video_dataset, meta.json_file, meta.image_root)
    results = {}
    for world_size in (1, 2):
        cfg = tiny_cfg(out, "SOLVER.IMS_PER_BATCH", 2 * CLIPS_PER_PROCESS, "SEED", 3)
        out_file = str(out / f"world{world_size}.pt")
        launch(_one_step_gradients, world_size, dist_url="auto", args=(cfg, dataset, out_file), device="cpu")
        results[world_size] = torch.load(out_file, weights_only=False)
    return results


def test_each_process_gets_its_share_of_the_batch(gradients):
    assert gradients[1]["clips"] == 2 * CLIPS_PER_PROCESS
    assert gradients[2]["clips"] == CLIPS_PER_PROCESS


def test_every_parameter_gets_a_gradient(gradients):
    """DDP (without find_unused_parameters) needs every trainable parameter in the graph."""
    missing = [n for n, g in gradients[1]["grads"].items() if g is None]
    assert not missing


def test_two_processes_compute_the_single_process_gradients(gradients):
    single, double = gradients[1]["grads"], gradients[2]["grads"]
    assert single.keys() == double.keys()
    for name, grad in single.items():
        torch.testing.assert_close(
            double[name], grad, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_logged_losses_average_to_the_single_process_losses(gradients):
    """detectron2 logs the mean over processes of each loss; it equals the single-process value."""
    (single,) = gradients[1]["losses"]
    per_rank = gradients[2]["losses"]
    for key, value in single.items():
        mean = torch.stack([losses[key] for losses in per_rank]).mean()
        torch.testing.assert_close(mean, value, rtol=1e-5, atol=1e-5, msg=key)
