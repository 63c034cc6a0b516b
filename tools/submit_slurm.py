#!/usr/bin/env python
"""Submit train_net.py to SLURM with submitit: N nodes x G GPUs, requeued and resumed on preemption.

    python tools/submit_slurm.py --nodes 2 --gpus-per-node 8 --partition PART --timeout-min 4320 \
        --job-dir output/slurm/r50_ovis -- --config-file configs/R50_ovis_360.yaml OUTPUT_DIR output/r50_ovis
    python tools/submit_slurm.py --local --tasks-per-node 2 -- --config-file configs/synthetic/tiny.yaml \
        MODEL.DEVICE cpu        # submitit's local executor: 2 CPU processes (gloo), for a quick check

Everything after `--` is train_net.py's command line. Each SLURM task is one training process (one GPU, or
one CPU process with MODEL.DEVICE cpu); they join through torch.distributed's env:// initialisation from
submitit's job environment. SLURM sends SIGUSR1 `--signal-delay-s` seconds before the time limit or a
preemption: training writes a checkpoint of the current iteration, submitit requeues the job, and the
requeued job runs with --resume, continuing from that checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# submitit's handler (and SLURM's --signal) use this signal; train_net checkpoints on it
os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")

import cloudpickle  # noqa: E402
import submitit  # noqa: E402


def _train_net():
    sys.path.insert(0, str(ROOT))
    import train_net

    return train_net


class TrainingJob:
    """The callable submitit runs in every task: train_net's `main` in a process group of all tasks."""

    def __init__(self, train_argv: list[str]):
        self.train_argv = list(train_argv)

    def __call__(self):
        train_net = _train_net()  # first: puts this checkout ahead of any installed mdqe
        import torch

        from mdqe.engine.launch import init_distributed_from_env, run_in_process_group

        args = train_net.default_argument_parser().parse_args(self.train_argv)
        cfg = train_net.load_config(args.config_file, args.opts)
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        if not on_cpu:
            torch.cuda.set_device(env.local_rank)
        if env.world_size > 1:
            init_distributed_from_env("gloo" if on_cpu else "nccl", env.local_world_size)
            if on_cpu:  # split the node's cores between its tasks
                torch.set_num_threads(max(1, torch.get_num_threads() // env.local_world_size))
        return run_in_process_group(train_net.main, args)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption (after train_net wrote its checkpoint): requeue with --resume."""
        argv = self.train_argv if "--resume" in self.train_argv else ["--resume", *self.train_argv]
        return submitit.helpers.DelayedSubmission(TrainingJob(argv))


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit SlurmExecutor parameters: one task per GPU (or --tasks-per-node), the preemption signal."""
    params = {
        "nodes": args.nodes,
        "ntasks_per_node": args.tasks_per_node or max(args.gpus_per_node, 1),
        "cpus_per_task": args.cpus_per_task,
        "time": args.timeout_min,
        "signal_delay_s": args.signal_delay_s,
        "job_name": args.job_name,
        "partition": args.partition,
        "mem": f"{args.mem_gb}GB" if args.mem_gb else None,
        "gpus_per_node": args.gpus_per_node or None,
        "constraint": args.constraint,
        "account": args.account,
        "comment": args.comment,
    }
    return {k: v for k, v in params.items() if v is not None}


def build_executor(args: argparse.Namespace) -> submitit.Executor:
    """A SLURM executor with the requested resources, or submitit's local executor with --local."""
    folder = str(Path(args.job_dir) / "%j")
    if args.local:
        executor = submitit.LocalExecutor(folder=folder)
        tasks = args.tasks_per_node or max(args.gpus_per_node, 1)
        executor.update_parameters(timeout_min=args.timeout_min, tasks_per_node=tasks, nodes=1)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=args.max_requeues)
    executor.update_parameters(**slurm_parameters(args))
    return executor


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    own, train_argv = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--tasks-per-node", type=int, default=0, help="default: one per GPU")
    parser.add_argument("--cpus-per-task", type=int, default=10)
    parser.add_argument("--mem-gb", type=int, default=0, help="memory per node (0: the cluster's default)")
    parser.add_argument("--timeout-min", type=int, default=4320)
    parser.add_argument("--signal-delay-s", type=int, default=120, help="SIGUSR1 this long before the end")
    parser.add_argument("--max-requeues", type=int, default=10, help="requeues after reaching the time limit")
    parser.add_argument("--partition")
    parser.add_argument("--constraint")
    parser.add_argument("--account")
    parser.add_argument("--comment")
    parser.add_argument("--job-name", default="mdqe")
    parser.add_argument("--job-dir", default="output/slurm", help="submitit's logs and pickles go here")
    parser.add_argument("--local", action="store_true", help="run with submitit's local executor")
    args = parser.parse_args(own)
    if not any(a == "--config-file" or a.startswith("--config-file=") for a in train_argv):
        parser.error("give train_net.py's arguments after `--`, at least --config-file")
    return args, train_argv


def main(argv: list[str] | None = None) -> submitit.Job:
    args, train_argv = parse_args(argv)
    if __name__ != "__main__":  # imported (e.g. by a test): the job process cannot import this file by name
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    job = build_executor(args).submit(TrainingJob(train_argv))
    print(f"Submitted job {job.job_id}; logs in {Path(args.job_dir) / str(job.job_id)}")
    return job


if __name__ == "__main__":
    main()
