"""Smoke runs of the benchmark scripts at tiny sizes, so they keep up with the library."""

import copy
import re
import sys

import helpers
import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness, report
from benchmarks.cpu import backends, inference_memory, latency, onnx_sizes
from benchmarks.probes import winograd
from pspnet.models import PSPNet


def run(module, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv, "--no-write"])
    module.main()


def table_rows(text: str, prefix: str) -> list[list[str]]:
    return [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(prefix)]


def test_command_line_names_the_script_by_its_folder(monkeypatch):
    monkeypatch.setattr(sys, "argv", [latency.__file__, "--size", "64"])  # as python -m sets it
    assert report.command_line() == "python -m benchmarks.cpu.latency --size 64"


def test_the_benchmarks_trained_like_is_the_tests_one():
    """Two copies, since tests do not import benchmarks/: they must stay the same."""
    model = PSPNet(3, backbone="resnet18", base_width=4)
    ours = helpers.trained_like(copy.deepcopy(model), seed=3)
    theirs = harness.trained_like(model, seed=3)
    assert not theirs.training
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_in_turn_alternates_the_calls():
    calls = []
    first, second = harness.in_turn(lambda: calls.append(1), lambda: calls.append(2), runs=3)
    assert calls == [1, 2] * 4 and len(first) == len(second) == 3  # one warm-up each


def test_onnx_sizes_is_exact_at_every_size(monkeypatch, capsys):
    tiny = ["--backbone", "resnet18", "--base-width", "8", "--num-classes", "5"]
    run(onnx_sizes, [*tiny, "--runs", "1", "--warmup", "0"], monkeypatch)
    rows = table_rows(capsys.readouterr().out, "| 1x3x")
    assert len(rows) == len(onnx_sizes.SIZES)
    assert max(float(row[1]) for row in rows) <= 1e-5  # max rel err vs eager


def test_latency_reports_one_timed_row(monkeypatch, capsys):
    run(
        latency,
        ["--backbone", "resnet18", "--size", "64", "--runs", "2", "--warmup", "0"],
        monkeypatch,
    )
    (row,) = table_rows(capsys.readouterr().out, "| PSPNet-resnet18")
    assert float(row[3]) > 0  # median latency


def test_inference_memory_runs_a_small_multi_scale_test(monkeypatch, capsys):
    tiny = ["--backbone", "resnet18", "--base-width", "8", "--num-classes", "5"]
    size = ["--height", "64", "--width", "128", "--base-size", "128", "--crop", "48"]
    run(inference_memory, [*tiny, *size, "--scales", "0.5", "1.0"], monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    (after,) = [line for line in lines if line.startswith("peak RSS after inference")]
    assert int(after.split()[-2]) > 0  # MiB


@pytest.mark.parametrize("size", [(9, 7), (10, 12)])
def test_winograd_prototype_is_a_3x3_convolution(size):
    images, weight = torch.randn(1, 8, *size), torch.randn(6, 8, 3, 3)
    got = winograd.winograd_conv(images, winograd.transformed_weights(weight))
    expected = F.conv2d(images, weight, padding=1)
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5


def test_winograd_probe_reports_each_shape(monkeypatch, capsys):
    run(winograd, ["--shapes", "8x12", "16x9", "--runs", "1"], monkeypatch)
    assert len(table_rows(capsys.readouterr().out, "| 8->8 @12x12")) == 2  # row + table


def test_gpu_camvid_pack_refuses_a_copy_over_its_size_limit(tiny_camvid, tmp_path):
    from benchmarks.gpu import camvid

    assert 0 < camvid.pack(tiny_camvid, tmp_path / "packed") < 1  # MiB
    assert (tmp_path / "packed" / "val.txt").read_text().count(".jpg valannot/") == 3
    with pytest.raises(SystemExit, match="over --max-mib"):
        camvid.pack(tiny_camvid, tmp_path / "again", max_mib=0.001)


def test_gpu_inference_script_runs_its_paths_on_the_cpu(tiny_camvid, tmp_path, monkeypatch, capsys):
    from benchmarks.gpu import inference as gpu_inference
    from pspnet.checkpoints import save_model
    from pspnet.models import PSPNet

    save_model(PSPNet(11, backbone="resnet18", base_width=4), tmp_path / "camvid.safetensors")
    paths = ["reference", "exact eager", "bf16 eager", "fp16"]
    run(
        gpu_inference,
        [
            "--smoke",
            "--device",
            "cpu",
            "--runs",
            "1",
            "--paths",
            *paths,
            "--checkpoint",
            str(tmp_path / "camvid.safetensors"),
            "--camvid",
            str(tiny_camvid),
        ],
        monkeypatch,
    )
    out = capsys.readouterr().out
    tables = out[out.rindex("**whole") :].split("CamVid val")[0]  # the final report's
    whole, slide = table_rows(tables, "| exact eager")
    assert float(whole[6]) <= 1e-5 and whole[7].strip() == "100.000%"
    assert slide[6].strip() == "n/a" and float(slide[7].strip(" %")) > 99
    assert tables.count("| fp16 eager (same parts fp32) | not offered here: fp16 runs on CUDA") == 2
    (camvid,) = table_rows(out.split("CamVid val")[-1], "| bf16 eager")
    assert 90 < float(camvid[1].strip(" %")) <= 100


def test_gpu_training_script_times_the_real_loop(tiny_camvid, monkeypatch, capsys):
    from benchmarks.gpu import training as gpu_training

    options = [
        "--smoke",
        "--device",
        "cpu",
        "--root",
        str(tiny_camvid),
        "--crop",
        "32",
        "--batch",
        "2",
        "--workers",
        "0",
        "--warmup",
        "1",
        "--steps",
        "2",
    ]
    run(gpu_training, ["speed", *options, "--settings", "fp32", "bf16"], monkeypatch)
    rows = table_rows(capsys.readouterr().out, "| ")
    speeds = [float(row[1]) for row in rows if row[1].strip()[0].isdigit()]
    assert len(speeds) == 4 and speeds[:2] == speeds[2:]  # as measured, then in the table
    assert min(speeds) > 0


def test_the_gpu_grid_script_runs_two_shards_into_one_report(tiny_camvid, tmp_path):
    """benchmarks/gpu/ablation.sh with the tiny budget on the CPU: both shards, one report."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "BUDGET": "tiny",
        "GRID": str(tmp_path / "grid"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    out = tmp_path / "out"
    subprocess.run(
        ["bash", "benchmarks/gpu/ablation.sh", str(out), str(tiny_camvid), "300"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert len(list(out.glob("results/*/result.json"))) == 22
    assert "not run" not in (out / "ablation.md").read_text()
    assert "grid: " in (out / "machine.txt").read_text()


def _finished_run(folder, miou: float, classes: int) -> None:
    import json

    folder.mkdir(parents=True)
    val = {"miou": miou, "mean_acc": miou, "pixel_acc": 0.9, "iou": [miou] * classes}
    lines = [{"iteration": i, "loss": 2.0 / i} for i in (5, 10, 20)]
    lines.append({"iteration": 20, "val": val})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    (folder / "result.json").write_text(json.dumps({"miou": miou}))


def test_own_data_report_counts_only_what_lies_beyond_the_seed_spread(tmp_path, monkeypatch):
    from benchmarks import camvid_own_data as own

    monkeypatch.setattr(own, "DOC", tmp_path / "doc.md")
    monkeypatch.setattr(own, "RESULTS", tmp_path / "results")
    out = tmp_path / "runs"
    for seed, (pspnet, fcn, weights) in enumerate(((0.46, 0.50, 0.47), (0.47, 0.51, 0.49))):
        _finished_run(out / "thin" / f"pspnet-seed{seed}", pspnet, 11)
        _finished_run(out / "thin" / f"fcn-seed{seed}", fcn, 11)
        _finished_run(out / "thin" / f"weights-seed{seed}", weights, 11)
    _finished_run(out / "finetune" / "scratch-seed0", 0.3, len(own.TARGET))
    _finished_run(out / "finetune" / "init-by-name-seed0", 0.4, len(own.TARGET))
    (out / "finetune" / "init-fresh-seed0").mkdir()  # still running: not counted
    (out / "thin" / "ohem-seed0").mkdir()
    own.report(out)
    text = own.DOC.read_text()
    assert "| FCN baseline (model.use_ppm=false) vs the config as it is | better, beyond" in text
    assert "| class weights auto vs the config as it is | within the spread |" in text
    assert "Not run: OHEM (0.7, 30000); class weights auto + OHEM." in text
    assert "| **mIoU** | 46.5 ± 0.5 | 50.5 ± 0.5 | 48.0 ± 1.0 |" in text
    assert "| seeds | 2 | 2 | 2 |" in text and "| seeds | 1 |" in text
    assert "init, classifier re-initialised" not in text  # no finished run of that arm
    assert "| init, rows carried by name vs from scratch | better, beyond the spread |" in text
    copied = sorted(p.parent.name for p in (tmp_path / "results").rglob("val.json"))
    runs = [
        "fcn-seed0",
        "fcn-seed1",
        "init-by-name-seed0",
        "pspnet-seed0",
        "pspnet-seed1",
        "scratch-seed0",
        "weights-seed0",
        "weights-seed1",
    ]
    assert copied == runs


def test_backends_writes_one_benchmark_table_per_shape(monkeypatch, capsys):
    tiny = backends.Shape("resnet50", 5, 40, "ade20k", base_width=8)
    monkeypatch.setattr(backends, "SHAPES", {"tiny": tiny})
    run(backends, ["--runs", "1", "--paths", "fp32:eager"], monkeypatch)
    printed = capsys.readouterr().out
    assert "PSPNet-resnet50, 5 classes, 40x40, random weights: measuring" in printed
    rows = {row[0].strip(): row for row in table_rows(printed, "| ")}
    assert {"none eager", "none semseg", "fp32 eager"} <= set(rows)
    assert float(rows["none semseg"][8]) <= 1e-5  # max rel err: semseg's network is the model
    assert "- fp32 >= 1.5x semseg: " in printed


def test_scene_memory_compares_the_routines_in_turn(monkeypatch, capsys, tmp_path):
    pytest.importorskip("rasterio")
    from benchmarks.cpu import scene_memory

    argv = ["--sizes", "200", "300", "--reference", "200", "--rounds", "1", "--work", tmp_path]
    run(scene_memory, [str(arg) for arg in argv], monkeypatch)
    printed = capsys.readouterr().out
    commands = table_rows(printed, "| 300^2")
    assert len(commands) == 1 and commands[0][2].strip()  # growth over the 200^2 scene
    assert [row[0].strip() for row in table_rows(printed, "| streamed")] == [
        "streamed (windows read from disk)"
    ]
    assert len(table_rows(printed, "| in memory")) == 1
    assert re.search(r"Streamed throughput: \d+% of the in-memory routine's", printed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "-5"], "'-5' is not a whole number above 0"),
        (["--rounds", "0"], "'0' is not a whole number above 0"),
        (["--work", "FILE"], "not a folder"),
    ],
)
def test_scene_memory_refuses_bad_values_in_one_line(argv, message, monkeypatch, capsys, tmp_path):
    from benchmarks.cpu import scene_memory

    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / arg) if arg == "FILE" else arg for arg in argv]
    with pytest.raises(SystemExit) as exit_:
        run(scene_memory, argv, monkeypatch)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
