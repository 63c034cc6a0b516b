"""Process launcher: detectron2's `launch` on GPUs (NCCL), and a CPU path with the gloo backend.

detectron2 v0.6's launch asserts CUDA in every worker, so multi-process training on CPU (used by the
tests and by machines without GPUs) needs its own worker.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from .hooks import EXIT_PREEMPTED, PREEMPTION_SIGNALS

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func: Callable,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    device: str = "cuda",
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run `main_func(*args)` in `num_processes_per_machine` processes on each machine.

    device "cuda": one process per GPU through detectron2's launch (NCCL). device "cpu": CPU processes
    joined with the gloo backend; `dist_url` "auto" picks a free local port. A worker stopped by a
    preemption signal (exit status EXIT_PREEMPTED) makes this process exit with the same status.
    """
    if device != "cpu":
        try:
            d2_launch(
                run_in_process_group,
                num_processes_per_machine,
                num_machines,
                machine_rank,
                dist_url,
                (main_func, *args),
                timeout,
            )
        except mp.ProcessExitedException as e:
            if e.exit_code == EXIT_PREEMPTED:
                raise SystemExit(EXIT_PREEMPTED) from None
            raise
        return
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    context = mp.start_processes(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        join=False,
    )
    _join_forwarding_preemption_signals(context)


def _join_forwarding_preemption_signals(context: mp.ProcessContext) -> None:
    """Wait for the workers; SIGTERM/SIGUSR1 sent to this process are passed on to them (each then
    checkpoints and stops, see PreemptionCheckpointer), and their preemption exit status becomes ours."""

    def forward(signum: int, frame) -> None:
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in PREEMPTION_SIGNALS}
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as e:
        if e.exit_code == EXIT_PREEMPTED:
            raise SystemExit(EXIT_PREEMPTED) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _cpu_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_processes_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    rank = machine_rank * num_processes_per_machine + local_rank
    try:
        dist.init_process_group(
            "gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    create_local_process_group(num_processes_per_machine)
    # Split the machine's cores between the workers instead of oversubscribing them.
    torch.set_num_threads(max(1, torch.get_num_threads() // num_processes_per_machine))
    comm.synchronize()
    run_in_process_group(main_func, *args)


def run_in_process_group(main_func: Callable, *args: Any) -> Any:
    """`main_func(*args)`, then leave the process group (if one was joined), also when it raises or exits.

    A process that exits still in a gloo group can abort at interpreter shutdown ("terminate called
    without an active exception", SIGABRT), when the group's worker threads are destroyed after the
    interpreter. DistributedDataParallel holds the group through reference cycles, so they are collected
    before the group is destroyed. Destroying the group is local to this process and waits for no other
    rank."""
    try:
        return main_func(*args)
    finally:
        if dist.is_available() and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def create_local_process_group(num_processes_per_machine: int) -> None:
    """detectron2's per-machine process group (comm.get_local_rank / get_local_size) for an initialised
    default group of machines x `num_processes_per_machine` ranks, numbered machine by machine."""
    if hasattr(comm, "create_local_process_group"):  # detectron2 > v0.6
        comm.create_local_process_group(num_processes_per_machine)
        return
    world_size, rank = dist.get_world_size(), dist.get_rank()
    for i in range(world_size // num_processes_per_machine):
        ranks = list(range(i * num_processes_per_machine, (i + 1) * num_processes_per_machine))
        group = dist.new_group(ranks)  # every rank must create every group
        if rank in ranks:
            comm._LOCAL_PROCESS_GROUP = group


def init_distributed_from_env(
    backend: str, num_processes_per_machine: int, timeout: timedelta = DEFAULT_TIMEOUT
) -> None:
    """Join the process group described by torch.distributed's environment variables (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE; e.g. exported by submitit), and create detectron2's local group."""
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    create_local_process_group(num_processes_per_machine)
    comm.synchronize()
