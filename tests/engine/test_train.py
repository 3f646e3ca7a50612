import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port, tiny_overrides

from pspnet.checkpoints import load_checkpoint, load_model
from pspnet.config import load_train_config
from pspnet.data.datasets import SegmentationDataset
from pspnet.data.presets import get_preset
from pspnet.engine.distributed import leave
from pspnet.engine.evaluate import evaluate
from pspnet.engine.optim import poly_lr
from pspnet.engine.train import train
from pspnet.errors import DatasetError, TrainingError
from pspnet.inference.protocol import Network


def config_for(root: Path, **extra):
    return load_train_config(None, tiny_overrides(root, **extra))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_writes_checkpoints_logs_and_metrics(tiny_camvid, tmp_path):
    config = config_for(tiny_camvid, val_every=3)
    result = train(config, tmp_path / "run")
    run = tmp_path / "run"
    assert result.iteration == 6
    for name in ("config.yaml", "last.pt", "best.safetensors", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in entries if "lr" in e]
    assert [e["iteration"] for e in steps] == [1, 2, 3, 4, 5, 6]
    for entry in steps:  # poly schedule, evaluated at the step's start
        assert entry["lr"] == pytest.approx(poly_lr(0.01, entry["iteration"] - 1, 6, 0.9))
    assert [e["iteration"] for e in entries if "val" in e] == [3, 6]
    # The final scores are those of the last weights, scored again independently here.
    last = load_model(run / "last.pt")
    preset = get_preset("camvid")
    val_set = SegmentationDataset(tiny_camvid, "val", preset)
    again = evaluate(Network.of(last), val_set, config.evaluation).compute().to_dict()
    assert result.final_metrics["miou"] == pytest.approx(again["miou"], abs=1e-12)
    assert result.final_metrics["iou"] == pytest.approx(again["iou"], abs=1e-12, nan_ok=True)
    val_mious = [e["val"]["miou"] for e in entries if "val" in e]
    assert result.best_miou == max(val_mious)
    best = load_checkpoint(run / "best.safetensors")
    assert float(best.metadata["miou"]) == pytest.approx(max(val_mious), abs=1e-6)
    assert best.config == config.model
    assert json.loads(best.metadata["class_names"])[0] == "Sky"
    assert load_train_config(run / "config.yaml") == config


def test_resume_equals_uninterrupted_run(tiny_camvid, tmp_path):
    config = config_for(tiny_camvid)
    train(config, tmp_path / "straight")
    partial = config_for(tiny_camvid, iterations=6)
    # Stop after 4 of 6 iterations by raising from the callback, as a crash would.

    def crash(event):
        if event["kind"] == "checkpoint" and event["iteration"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(partial, tmp_path / "resumed", callback=crash)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["iteration"] == 4
    result = train(partial, tmp_path / "resumed")
    assert result.iteration == 6
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    momentum = [s["momentum_buffer"] for s in straight["optimizer"]["state"].values()]
    momentum_resumed = [s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, momentum_resumed))


def test_resume_refuses_a_different_config(tiny_camvid, tmp_path):
    train(config_for(tiny_camvid, iterations=2), tmp_path / "run")
    with pytest.raises(TrainingError, match="optim.lr"):
        train(config_for(tiny_camvid, iterations=2, **{"optim.lr": 0.5}), tmp_path / "run")


def test_non_finite_loss_stops_and_keeps_last_good_state(tiny_camvid, tmp_path):
    config = config_for(tiny_camvid, iterations=30, checkpoint_every=1, **{"optim.lr": 1e12})
    with pytest.raises(TrainingError, match="loss became"):
        train(config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_batch_of_one_trains(tiny_camvid, tmp_path):
    assert train(config_for(tiny_camvid, batch_size=1, iterations=2), tmp_path / "r").iteration == 2


def test_sigkill_then_rerun_same_command_resumes(tiny_camvid, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "pspnet",
        "train",
        "--out",
        str(run),
        "--set",
        *tiny_overrides(tiny_camvid, iterations=40, checkpoint_every=3),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed_after = None
    while time.time() < deadline and process.poll() is None:
        if (run / "last.pt").is_file():
            state = torch.load(run / "last.pt", weights_only=True)
            if state["iteration"] >= 6:
                process.send_signal(signal.SIGKILL)
                killed_after = state["iteration"]
                break
        time.sleep(0.05)
    process.wait()
    assert killed_after is not None and killed_after < 40, "the run was not killed mid-way"
    resumed_at = torch.load(run / "last.pt", weights_only=True)["iteration"]
    assert resumed_at % 3 == 0 and resumed_at >= killed_after  # at most 3 steps lost
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming {run} at iteration {resumed_at}" in done.stderr + done.stdout
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 40
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"lr"' in line]
    assert [s["iteration"] for s in steps] == list(range(1, 41))
    for entry in steps:
        assert entry["lr"] == pytest.approx(poly_lr(0.01, entry["iteration"] - 1, 40, 0.9))


def _ddp_worker(rank: int, world: int, root: str, out: str, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    config = config_for(Path(root), batch_size=4, iterations=4)
    sums = []

    def record(event):
        if event["kind"] == "step":
            flat = torch.cat([p.detach().flatten() for p in event["model"].parameters()])
            gathered = [torch.zeros_like(flat) for _ in range(world)]
            torch.distributed.all_gather(gathered, flat)
            sums.append(all(torch.equal(gathered[0], g) for g in gathered[1:]))

    train(config, Path(out) / "run", callback=record)
    Path(out, f"rank{rank}.json").write_text(json.dumps(sums))
    leave(together=True)


def test_two_cpu_processes_hold_identical_weights_after_every_step(tiny_camvid, tmp_path):
    port = free_port()
    mp.spawn(_ddp_worker, args=(2, str(tiny_camvid), str(tmp_path), port), nprocs=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [True] * 4
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 4


def test_fused_optimizer_makes_the_same_updates(tiny_camvid, tmp_path):
    train(config_for(tiny_camvid, iterations=3), tmp_path / "plain")
    train(config_for(tiny_camvid, iterations=3, **{"optim.fused": "true"}), tmp_path / "fused")
    plain_model = load_model(tmp_path / "plain" / "last.pt")
    fused_model = load_model(tmp_path / "fused" / "last.pt")
    saved = torch.load(tmp_path / "fused" / "last.pt", weights_only=False)["optimizer"]
    assert all(group["fused"] for group in saved["param_groups"])
    for (name, a), b in zip(plain_model.state_dict().items(), fused_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_training_runs_saves_and_resumes(tiny_camvid, tmp_path):
    config = config_for(tiny_camvid, iterations=2, checkpoint_every=1, compile="true")
    assert config.compile
    result = train(config, tmp_path / "run")
    assert result.iteration == 2 and (tmp_path / "run" / "last.pt").is_file()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert not any("_orig_mod" in key for key in state["model"])  # the plain model is saved


def test_auto_class_weights_come_from_the_training_labels(tiny_camvid, tmp_path):
    from pspnet.data.check import check_dataset

    config = config_for(
        tiny_camvid,
        **{"loss.class_weights": "auto", "loss.ohem_thresh": 0.7, "loss.ohem_min_kept": 500},
    )
    events = []
    train(config, tmp_path / "run", callback=events.append)
    saved = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    expected = check_dataset(tiny_camvid, get_preset("camvid"), "train").class_weights()
    assert saved["weights"] == pytest.approx(expected.tolist())
    assert saved["rule"] == "median frequency" and list(saved["classes"])[0] == "Sky"
    assert any(e["kind"] == "check" for e in events)
    steps = [e for e in events if e["kind"] == "step"]
    assert all(0 < e["ohem_kept"] <= 1 for e in steps) and len(steps) == 6


def test_binary_masks_fail_before_the_first_step_with_the_fix(tmp_path):
    from PIL import Image

    for i in range(3):
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20, 10:30] = 255
        (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / f"images/train/{i}.png")
        Image.fromarray(mask).save(tmp_path / f"labels/train/{i}.png")
    (tmp_path / "classes.txt").write_text("background\nlesion\n")
    config = config_for(tmp_path, **{"data.dataset": "custom", "data.val_split": "train"})
    events = []
    with pytest.raises(DatasetError, match=r"data.label_map: \{255: 1\}"):
        train(config, tmp_path / "run", callback=events.append)
    assert not any(e["kind"] == "step" for e in events)
    fixed = config_for(
        tmp_path,
        **{
            "data.dataset": "custom",
            "data.val_split": "train",
            "data.label_map": "{255: 1}",
            "iterations": 2,
        },
    )
    assert train(fixed, tmp_path / "run").iteration == 2


def _leaving_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group(
        "gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=2)
    )
    if rank == 0:
        started = time.monotonic()
        leave(together=True)  # rank 1 never comes to the barrier
        Path(out, "waited").write_text(f"{time.monotonic() - started:.1f}")
    else:
        time.sleep(6)  # still at work, then gone without waiting
        torch.distributed.destroy_process_group()


def test_a_rank_left_waiting_for_the_others_leaves_after_the_timeout(tmp_path):
    mp.spawn(_leaving_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    assert 1.5 <= float((tmp_path / "waited").read_text()) < 6


def test_multiband_geotiffs_train_with_measured_normalisation(tmp_path):
    pytest.importorskip("rasterio")
    from helpers import write_tiny_multiband

    from pspnet.data.images import read_bands
    from pspnet.data.normalization import Normalization
    from pspnet.inference import Segmenter

    root = write_tiny_multiband(tmp_path / "s2", bands=4)
    extra = {
        "data.dataset": "custom",
        "data.num_classes": 3,
        "data.crop_size": "[16,16]",
        "model.in_channels": 4,
        "data.bands": "[4,3,2,1]",
        "data.mean": "auto",
        "data.std": "auto",
        "iterations": 2,
    }
    config = config_for(root, **extra)
    run = tmp_path / "run"
    events = []
    assert train(config, run, callback=events.append).iteration == 2
    images = sorted((root / "images" / "train").iterdir())
    pixels = np.concatenate([read_bands(p)[..., [3, 2, 1, 0]].reshape(-1, 4) for p in images])
    saved = json.loads((run / "normalization.json").read_text())
    assert saved["bands"] == [4, 3, 2, 1] and saved["pixels"] == len(pixels)
    np.testing.assert_allclose(saved["mean"], pixels.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(saved["std"], pixels.astype(np.float64).std(0), rtol=1e-9)
    measured = Normalization.from_dict(saved)
    assert [e["normalization"] for e in events if e["kind"] == "normalization"] == [measured]
    for name in ("last.pt", "best.safetensors"):
        checkpoint = load_checkpoint(run / name)
        assert checkpoint.config.in_channels == 4
        assert checkpoint.normalization == measured, name
    labels = Segmenter.from_checkpoint(run / "best.safetensors")(images[0])
    assert labels.shape == (24, 32)

    # A resumed run reuses what the first measured (edited here to show it is read back).
    edited = {**saved, "mean": [1.0, 2.0, 3.0, 4.0]}
    (run / "normalization.json").write_text(json.dumps(edited))
    train(config, run)
    assert load_checkpoint(run / "last.pt").normalization.mean == (1.0, 2.0, 3.0, 4.0)


def test_bands_that_the_images_lack_are_refused_before_the_first_step(tmp_path):
    pytest.importorskip("rasterio")
    from helpers import write_tiny_multiband

    root = write_tiny_multiband(tmp_path / "s2", bands=4)
    extra = {
        "data.dataset": "custom",
        "data.num_classes": 3,
        "model.in_channels": 4,
        "data.bands": "[1,2,3,5]",
        "data.mean": "[0,0,0,0]",
        "data.std": "[1,1,1,1]",
    }
    events = []
    refusal = r"each image of .*s2 \[train\] has 4 bands; the model takes bands 1, 2, 3, 5"
    with pytest.raises(DatasetError, match=refusal):
        train(config_for(root, **extra), tmp_path / "run", callback=events.append)
    assert not any(e["kind"] == "step" for e in events)
