"""Which device a member runs on: CUDA only where Ray granted its worker a GPU (Ray 2.60 leaves
CUDA_VISIBLE_DEVICES alone for a worker that asked for none), the hardware outside Ray; and the groups that
cannot run on one GPU, refused when the config is read."""

from __future__ import annotations

import pytest
import torch
from conftest import SMOKE

from orchestrator.config.experiment import load_config
from workers.errors import ConfigError
from workers.model import devices


def test_the_device_follows_the_ray_grant_not_the_hardware():
    assert devices.device_for([], cuda_available=True).type == "cpu"  # a worker given no GPU, on a GPU node
    assert devices.device_for([0], cuda_available=True).type == "cuda"
    assert devices.device_for([0], cuda_available=False).type == "cpu"
    assert devices.device_for(None, cuda_available=True).type == "cuda"  # outside Ray: the hardware decides
    assert devices.device_for(None, cuda_available=False).type == "cpu"


def test_member_device_with_a_mocked_grant_on_a_gpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "ray_granted_gpus", lambda: [])
    assert devices.member_device() == torch.device("cpu")
    monkeypatch.setattr(devices, "ray_granted_gpus", lambda: [0])
    assert devices.member_device() == torch.device("cuda")
    monkeypatch.setattr(devices, "ray_granted_gpus", lambda: None)
    assert devices.member_device() == torch.device("cuda")


def test_real_ray_workers_see_their_grant(monkeypatch):
    """A real local Ray that declares one GPU: a task that asked for none gets the CPU even where CUDA looks
    available, one that asked for a share gets CUDA; the driver is no worker (the hardware decides there)."""
    import ray

    def in_worker():  # defined here so that Ray ships it by value (a test module is no importable package)
        """What a Ray worker sees: its grant, and its device with CUDA made to look available."""
        import torch as worker_torch

        from workers.model import devices as worker_devices

        worker_torch.cuda.is_available = lambda: True  # this worker process only: a GPU node, as torch sees it
        return worker_devices.ray_granted_gpus(), str(worker_devices.member_device())

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert devices.ray_granted_gpus() is None
        no_gpu = ray.remote(num_cpus=1)(in_worker)
        share = ray.remote(num_cpus=1, num_gpus=0.5)(in_worker)
        assert ray.get(no_gpu.remote()) == ([], "cpu")
        granted, device = ray.get(share.remote())
        assert len(granted) == 1 and device == "cuda"
    finally:
        ray.shutdown()


def test_copies_to_the_cpu_keep_the_tensor():
    tensor = torch.arange(6).view(2, 3)
    assert torch.equal(devices.to_device(tensor, "cpu"), tensor)
    assert devices.describe(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("overrides, words", [
    (["resources.members_per_actor=4", "resources.gpus_per_member=0.3"],
     "members_per_actor=4 x resources.gpus_per_member=0.3 = 1.2 GPUs .* largest group that fits is members_per_actor=3"),
    (["resources.members_per_actor=6", "resources.gpus_per_member=0.25"], "largest group that fits is members_per_actor=4"),
    (["resources.members_per_actor=4", "resources.gpus_per_member=1"], "= 4 GPUs .* members_per_actor=1"),
    (["resources.gpus_per_member=1.5"], "gpus_per_member=1.5: a member runs on one GPU"),
])
def test_groups_that_cannot_run_on_one_gpu_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=words):
        load_config(SMOKE, overrides)


def test_groups_that_fit_one_gpu_and_auto_are_accepted():
    assert load_config(SMOKE, ["resources.members_per_actor=4", "resources.gpus_per_member=0.25"])
    assert load_config(SMOKE, ["resources.members_per_actor=auto", "resources.gpus_per_member=0.3"])
    assert load_config(SMOKE, ["resources.members_per_actor=8"])  # CPU: no GPU share to add up
