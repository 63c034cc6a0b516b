import torch
import torch.distributed as dist
from detectron2.utils import comm

from mdqe.engine import launch


def _worker(out_dir):
    value = torch.tensor([float(comm.get_rank() + 1)])
    dist.all_reduce(value)
    torch.save(
        {"sum": value.item(), "world": comm.get_world_size(), "local": comm.get_local_size()},
        f"{out_dir}/rank{comm.get_rank()}.pt",
    )


def test_cpu_launch_runs_gloo_workers(tmp_path):
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path),), device="cpu")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(r == {"sum": 3.0, "world": 2, "local": 2} for r in results)


def test_cpu_launch_with_one_process_runs_in_place(tmp_path):
    calls = []
    launch(calls.append, 1, args=("x",), device="cpu")
    assert calls == ["x"]
