"""The Ray Data path in Ray's local mode writes what `pspnet predict` writes."""

import numpy as np
import pytest
from PIL import Image

from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.models import PSPNet

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'pspnet[ray]')")


def test_ray_actors_write_the_same_files_as_predict(tmp_path, trained):
    from pspnet.batch import segment_with_ray

    checkpoint = tmp_path / "model.safetensors"
    save_model(trained(PSPNet(11, backbone="resnet18", base_width=4)), checkpoint)
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate([(40, 48), (40, 48), (32, 56), (40, 48), (24, 24)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            folder / f"img_{i}.png"
        )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = segment_with_ray(
            str(folder), str(checkpoint), str(tmp_path / "ray"), actors=1, batch_size=2,
            mode="whole",
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert sorted(row["path"].rsplit("/", 1)[-1] for row in rows) == [
        f"img_{i}.png" for i in range(5)
    ]
    assert all(row["label_png"].endswith("_label.png") and row["classes"] for row in rows)
    argv = ["predict", str(folder), "--checkpoint", str(checkpoint), "--mode", "whole"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    ray_files = {p.name: p.read_bytes() for p in (tmp_path / "ray").iterdir()}
    cli_files = {p.name: p.read_bytes() for p in (tmp_path / "cli").iterdir()}
    assert len(cli_files) == 15 and ray_files == cli_files
