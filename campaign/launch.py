"""A campaign's worker processes on this machine: one per GPU id, each seeing only its own (CUDA_VISIBLE_DEVICES is
set before the process starts, so no library can touch another GPU first), or K on the CPU, or one in this
process."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys

from campaign.plan import Campaign
from utils.errors import UserError


def launch(campaign: Campaign, workers: int, devices: list[str] | None) -> list[int]:
    """One worker per device or `workers` CPU workers, in spawned processes; with one worker and no devices it
    runs here. Returns the worker processes' exit codes."""
    if devices is None and workers == 1:
        print(f"worker: {json.dumps(_run_worker(campaign))}", flush=True)
        return [0]
    context = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA and threads start clean
    processes = []
    for i, device in enumerate(devices if devices is not None else [None] * workers):
        process = context.Process(target=_worker_main, args=(campaign, device), name=f"sweep-worker-{i}")
        with _visible_devices(device):  # a spawned interpreter inherits the environment of this moment
            process.start()
        processes.append(process)
    for process in processes:
        process.join()
    return [process.exitcode for process in processes]


@contextlib.contextmanager
def _visible_devices(device: str | None):
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    try:
        yield
    finally:
        if device is not None:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _run_worker(campaign: Campaign) -> dict:
    # Imported here, not at the top: the worker's imports (torch and the model libraries, seconds of CPU) belong
    # to the process that trains, not to the one that only starts the workers and waits (no cycle: worker never
    # imports this module).
    from campaign.worker import run_worker

    return run_worker(campaign)


def _worker_main(campaign: Campaign, device: str | None) -> None:
    try:
        counts = _run_worker(campaign)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"worker{'' if device is None else ' on device ' + device}: {json.dumps(counts)}", flush=True)
