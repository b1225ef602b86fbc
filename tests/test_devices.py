"""mal.common.devices: no silent CPU fallback, the device line, shard -> GPU mapping (on this machine's GPUs)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from mal.common.devices import (
    DeviceError,
    log_device,
    nvidia_present,
    resolve_device,
    resolve_num_gpus,
    shard_device,
)

N_GPU = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_no_gpu = pytest.mark.skipif(N_GPU > 0, reason="checks what a machine without a usable GPU does")


@needs_no_gpu
def test_cuda_asked_for_without_one_raises_naming_the_param_and_torch_build() -> None:
    for req in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError) as e:
            resolve_device(req, "pseudo_label.device")
        msg = str(e.value)
        assert msg.startswith(f"pseudo_label.device: {req} asked for, but torch sees 0 GPU(s)"), msg
        assert f"torch {torch.__version__}" in msg and "is_available()=False" in msg
        assert (f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in msg
    with pytest.raises(DeviceError, match="detector.num_gpus: 2 GPU"):
        resolve_num_gpus(2, "detector.num_gpus")


@needs_no_gpu
def test_auto_is_cpu_here_and_warns_only_where_nvidia_devices_exist(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mal.devices"):
        assert resolve_device("auto", "pseudo_label.device") == torch.device("cpu")
        assert resolve_num_gpus("auto") == 0 and resolve_num_gpus(0) == 0
    warned = any("auto -> CPU although this machine has NVIDIA devices" in r.message for r in caplog.records)
    assert warned == nvidia_present()


def test_explicit_cpu_and_bad_requests() -> None:
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(DeviceError, match="is not auto | cpu | cuda | cuda:N"):
            resolve_device(bad, "device")
    with pytest.raises(DeviceError, match="not auto or a GPU count"):
        resolve_num_gpus("two")
    with pytest.raises(DeviceError):
        resolve_num_gpus(-1)


def test_shard_device_spreads_shards_over_gpus_and_follows_local_rank() -> None:
    assert [shard_device(i, 3, env={}) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert shard_device(4, 0, env={}) == "cpu" and shard_device(4, 1, env={}) == "cuda:0"
    assert shard_device(0, 4, env={"LOCAL_RANK": "2"}) == "cuda:2"  # one process per GPU (torchrun)
    assert shard_device(0, 2, env={"LOCAL_RANK": "3"}) == "cuda:1"
    os.environ.pop("LOCAL_RANK", None)
    assert shard_device(7, 4) == "cuda:3"  # env defaults to os.environ


def test_log_device_line(capsys: pytest.CaptureFixture) -> None:
    line = log_device("pseudo_label", torch.device("cpu"), amp=True)
    assert line == f"pseudo_label: device cpu ({torch.get_num_threads()} threads), AMP off"  # AMP is CUDA only
    assert capsys.readouterr().out.strip() == line
    if N_GPU:
        assert log_device("x", "cuda:0", amp=True).endswith(f"1 of {N_GPU} GPUs), AMP on")
