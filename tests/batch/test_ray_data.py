"""The Ray Data path in Ray's local mode writes what `pspnet predict` writes."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.errors import ConfigError
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'pspnet[ray]')")


def inputs(folder):
    """Five images, two of them named img.png in different folders, and one that is no image."""
    rng = np.random.default_rng(0)
    names = ["a/img.png", "b/img.png", "c.png", "d/e.png", "f.png"]
    sizes = [(40, 48), (40, 48), (32, 56), (40, 48), (24, 24)]
    for name, size in zip(names, sizes):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    return names


def test_ray_actors_write_the_same_files_as_predict(tmp_path, trained):
    from pspnet.batch import segment_with_ray

    checkpoint = tmp_path / "model.safetensors"
    save_model(trained(PSPNet(11, backbone="resnet18", base_width=4)), checkpoint)
    folder = tmp_path / "in"
    names = inputs(folder)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = segment_with_ray(
            str(folder),
            str(checkpoint),
            str(tmp_path / "ray"),
            actors=1,
            batch_size=2,
            inference=InferenceOverrides(mode="whole"),
        )
    finally:
        ray.shutdown()
    by_name = {row["path"].removeprefix(str(folder) + "/"): row for row in rows}
    assert sorted(by_name) == sorted([*names, "broken.png"])
    assert "broken.png" in by_name["broken.png"]["error"]  # one bad image, one error row
    assert by_name["broken.png"]["label_png"] == ""
    good = [by_name[name] for name in names]
    assert all(row["error"] == "" and row["label_png"].endswith("_label.png") for row in good)
    assert all(json.loads(row["shares"]) and json.loads(row["confidence"]) for row in good)
    argv = ["predict", str(folder), "--checkpoint", str(checkpoint), "--mode", "whole"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 1  # the broken image is reported
    ray_files = {
        p.relative_to(tmp_path / "ray"): p.read_bytes() for p in (tmp_path / "ray").rglob("*.png")
    }
    cli_files = {
        p.relative_to(tmp_path / "cli"): p.read_bytes() for p in (tmp_path / "cli").rglob("*.png")
    }
    assert len(cli_files) == 15 and ray_files == cli_files


POOL_AS_LARGE_AS_THE_MACHINE = textwrap.dedent("""
    import sys, ray
    from pspnet.batch import segment_with_ray
    from pspnet.inference.settings import InferenceOverrides
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = segment_with_ray(sys.argv[1], sys.argv[2], sys.argv[3], actors=2, batch_size=1,
                            inference=InferenceOverrides(mode="whole"))
    print(len(rows), sum(1 for row in rows if row["error"]))
""")


def test_a_pool_of_as_many_actors_as_cpus_finishes(tmp_path, trained):
    checkpoint = tmp_path / "model.safetensors"
    save_model(trained(PSPNet(11, backbone="resnet18", base_width=4)), checkpoint)
    inputs(tmp_path / "in")
    args = [str(tmp_path / "in"), str(checkpoint), str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-c", POOL_AS_LARGE_AS_THE_MACHINE, *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["6", "1"]


def test_actor_shares_leave_room_for_the_readers():
    from pspnet.batch.ray_data import READER_CPUS, actor_cpus

    assert actor_cpus(1, 2) == 1.0
    assert actor_cpus(2, 2) == pytest.approx((2 - READER_CPUS) / 2)
    with pytest.raises(ConfigError, match="16 actors do not fit 2 CPUs.*at most 7"):
        actor_cpus(16, 2)


def test_inputs_that_would_share_outputs_are_refused_before_any_work(tmp_path):
    from pspnet.batch import segment_with_ray
    from pspnet.errors import DatasetError

    for name in ("x.png", "x.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(DatasetError, match="x.jpg and .*x.png would both write x_label.png"):
        segment_with_ray(str(tmp_path), "unused.safetensors", str(tmp_path / "out"))
