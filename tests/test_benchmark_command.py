"""``pspnet benchmark`` on a tiny checkpoint: every path listed with its columns or its skip
reason, an mIoU per path on a dataset, and ``--save`` making ``auto`` run what it measured."""

import re

import pytest
import torch

from pspnet.benchmark import BenchmarkSettings, run_benchmark
from pspnet.benchmark.paths import CANDIDATES
from pspnet.checkpoints import save_model
from pspnet.cli import main
from pspnet.errors import ConfigError
from pspnet.inference import Segmenter
from pspnet.inference.optimized.measured import ModelShape, find_record, records_file
from pspnet.inference.settings import InferenceOverrides
from pspnet.models import PSPNet
from pspnet.models.pspnet import ModelConfig

SIZE = 40
# path, median, speed-up, vs semseg, goal, GFLOP/s, warm-up, memory, rel err, agreement, mIoU, auto
COLUMNS = 12
MEDIAN, SPEEDUP, VERSUS, GOAL, RATE, WARMUP, MEMORY, ERROR, AGREEMENT, MIOU, AUTO = range(1, 12)


@pytest.fixture
def checkpoint(tmp_path, trained, monkeypatch):
    monkeypatch.setenv("PSPNET_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = trained(PSPNet(11, backbone="resnet18", base_width=8))  # CamVid's 11 classes
    path = tmp_path / "tiny.safetensors"
    save_model(model, path, {"dataset": "camvid"})
    return path


def table_rows(text: str) -> dict[str, list[str]]:
    """The table's rows by path name, each as its cells."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"\w+ \w+", cells[0]):
            rows[cells[0]] = cells
    return rows


def test_every_path_is_listed_with_its_columns_or_why_it_was_skipped(checkpoint, tmp_path, capsys):
    out = tmp_path / "table.md"
    args = ["benchmark", "--checkpoint", str(checkpoint), "--size", str(SIZE), "--runs", "2"]
    assert main([*args, "--paths", "fp32:eager", "fp32:onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(out.read_text())
    assert table_rows(printed) == rows
    assert sorted(rows) == sorted(c.name for c in CANDIDATES)
    assert list(rows)[:3] == ["none eager", "fp32 eager", "fp32 onnx"]  # measured ones first
    for name in ("none eager", "fp32 eager", "fp32 onnx"):
        cells = rows[name]
        assert len(cells) == COLUMNS and cells[VERSUS] == cells[GOAL] == "", cells
        assert all(cells[i] for i in (MEDIAN, SPEEDUP, RATE, WARMUP, MEMORY, ERROR, AGREEMENT))
        assert float(cells[MEDIAN]) > 0 and cells[SPEEDUP].endswith("x")
        assert float(cells[RATE]) > 0 and float(cells[MEMORY]) >= 0
    assert rows["none eager"][SPEEDUP] == "1.00x" and rows["none eager"][AUTO] == "reference"
    assert float(rows["fp32 onnx"][ERROR]) <= 1e-5 and rows["fp32 onnx"][AUTO] == "yes"
    assert rows["fp32 compile"][1] == "skipped: not in --paths"
    assert rows["int8 onnx"][1].startswith("skipped: needs calibration images")
    assert rows["none semseg"][1] == "skipped: semseg builds ResNet-50/101/152 only, not resnet18"
    if not torch.cuda.is_available():
        assert rows["fp16 eager"][1] == "skipped: CUDA only (none here)"
    assert "4 synthetic images" in printed
    assert "Goals not judged: semseg's network was not measured (semseg builds" in printed
    assert re.search(
        r"fp32 probes \(GFLOP/s\): matmul 2048\^3 \d+, conv 3x3 256->256 d2 @5x5", printed
    )
    assert find_record(ModelShape("resnet18", 8, 8, 11, 3, (SIZE, SIZE))) is None  # no --save


def test_with_data_each_path_gets_an_miou_and_save_makes_auto_follow(
    checkpoint, tiny_camvid, capsys
):
    pytest.importorskip("onnxruntime")
    settings = BenchmarkSettings(
        checkpoint=str(checkpoint),
        data=tiny_camvid,
        size=SIZE,
        runs=2,
        limit=2,
        paths=("fp32:eager", "int8:onnx"),
        calibration_count=3,
        inference=InferenceOverrides(mode="whole", flip=False),
    )
    report = run_benchmark(settings)
    assert [p.name for p in report.record.paths] == ["none eager", "fp32 eager", "int8 onnx"]
    assert all(p.miou is not None and 0 <= p.miou <= 1 for p in report.record.paths)
    assert report.record.paths[1].agreement == 1.0  # exact: every label kept
    assert report.record.agreement_on == "camvid val, 2 images"
    int8 = report.record.paths[2]
    assert int8.relative_error > 1e-5 and int8.qualifies == (int8.agreement >= 0.999)

    args = ["benchmark", "--checkpoint", str(checkpoint), "--data", str(tiny_camvid)]
    options = ["--size", str(SIZE), "--runs", "2", "--limit", "2", "--mode", "whole"]
    assert main([*args, *options, "--paths", "fp32:onnx", "--no-flip", "--save"]) == 0
    printed = capsys.readouterr().out
    assert f"recorded in {records_file()}" in printed
    record = find_record(ModelShape("resnet18", 8, 8, 11, 3, (SIZE, SIZE)))
    fastest = record.fastest()
    assert fastest is not None and f"auto now run {fastest.name}" in printed
    segmenter = Segmenter.from_checkpoint(
        checkpoint, inference=InferenceOverrides(crop_size=(SIZE, SIZE))
    )
    assert (segmenter.precision, segmenter.backend) == (fastest.precision, fastest.backend)
    assert segmenter.path_reason == f"measured on {record.date}"


def test_a_path_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match="paths"):
        BenchmarkSettings(checkpoint="x", paths=("fp64:eager",))


def test_skip_reasons_name_what_is_missing(monkeypatch):
    from pspnet.benchmark import paths

    real_find_spec = paths.importlib.util.find_spec
    monkeypatch.setattr(
        paths.importlib.util,
        "find_spec",
        lambda name: None if name in ("openvino", "nncf") else real_find_spec(name),
    )
    monkeypatch.setattr(paths, "native_bf16", lambda: False)
    monkeypatch.setattr(paths, "cpu_capability", lambda: "AVX2")
    cpu = torch.device("cpu")

    def reason(precision, backend, **options):
        options = {"asked": (), "calibrated": True, **options}
        config = ModelConfig(11)
        return paths.skip_reason(paths.Candidate(precision, backend), cpu, config, **options)

    assert reason("fp32", "openvino") == "openvino not installed (pip install 'pspnet[openvino]')"
    assert reason("int8", "openvino") == (
        "openvino, nncf not installed (pip install 'pspnet[openvino]')"
    )
    assert reason("bf16", "eager") == "no native bf16 on this CPU (AVX2)"
    assert reason("int8", "onnx", calibrated=False).startswith("needs calibration images")
    assert reason("fp32", "eager") is None
    assert reason("fp32", "eager", asked=("fp32:onnx",)) == "not in --paths"
    assert reason("none", "eager", asked=("fp32:onnx",)) is None  # the references always run
    assert reason("none", "semseg", asked=("fp32:onnx",)) is None


def test_semseg_network_is_the_reference_of_the_goals(tmp_path, trained, monkeypatch, capsys):
    """A model of semseg's geometry (ResNet-50, narrow) gets semseg's network measured beside
    the plain model, equal to it, and each goal judged against it with the chip's limit."""
    monkeypatch.setenv("PSPNET_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "r50.safetensors"
    save_model(trained(PSPNet(19, backbone="resnet50", base_width=8)), path)
    out = tmp_path / "table.md"
    args = ["benchmark", "--checkpoint", str(path), "--size", str(SIZE), "--runs", "2"]
    assert main([*args, "--paths", "fp32:eager", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(out.read_text())
    assert list(rows)[:3] == ["none eager", "none semseg", "fp32 eager"]
    semseg = rows["none semseg"]
    assert semseg[AUTO] == "reference" and semseg[VERSUS] == "1.00x" and semseg[GOAL] == ""
    assert float(semseg[ERROR]) <= 1e-5 and semseg[AGREEMENT] == "100.00"
    exact = rows["fp32 eager"]
    assert float(exact[ERROR]) <= 1e-5 and exact[AUTO] == "yes"  # logits: scale-free
    versus = float(exact[VERSUS].removesuffix("x"))
    assert versus == pytest.approx(float(semseg[MEDIAN]) / float(exact[MEDIAN]), abs=0.02)
    if versus != 1.5:  # rounded either way
        assert exact[GOAL] == (">= 1.5x: met" if versus > 1.5 else ">= 1.5x: not met")
    fp32 = next(line for line in printed.splitlines() if line.startswith("- fp32 >= 1.5x semseg"))
    verdict = r"(met|not met, short by \d\.\d\dx)"
    assert re.search(
        verdict + r" \(fp32 eager \d+\.\d\dx(, beyond its agreement threshold)?\)", fp32
    )
    assert re.search(r"this chip allows an exact path at most \d+\.\d\dx semseg's", fp32)
    assert "- bf16 >= 3x semseg: " in printed
