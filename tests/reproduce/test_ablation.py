"""The ablation grid: runs end to end on a tiny budget, resumes after a kill, writes its report."""

import pytest
from PIL import Image

from pspnet.cli import main
from pspnet.reproduce.ablation import VARIANTS, RunResult, grid_configs, run_grid
from pspnet.reproduce.report import PAPER, markdown, summarise


def test_the_tiny_grid_runs_end_to_end_and_reports(tiny_camvid, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = [
        "reproduce",
        "ablation",
        "--dataset",
        "camvid",
        "--root",
        str(tiny_camvid),
        "--budget",
        "tiny",
        "--out",
        str(out),
        "--seeds",
        "2",
    ]
    assert main(argv) == 0
    results = sorted(out.glob("*/result.json"))
    assert len(results) == 2 * len(VARIANTS) == 22
    report = (out / "ablation.md").read_text()
    for label in PAPER:  # every row of the paper's tables, ours beside theirs
        assert f"| {label} |" in report, label
    assert "not run" not in report and "± " in report
    assert "| ResNet50+B1236+AVE+DR |" in report and "| 41.68 | 80.04 |" in report
    assert Image.open(out / "ablation.png").size[0] > 500
    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main([*argv, "--report-only"]) == 0
    assert main(argv) == 0  # everything finished: nothing is trained again
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert "wrote" in capsys.readouterr().out


def test_a_killed_grid_resumes_without_redoing_finished_runs(tiny_camvid, tmp_path):
    runs = grid_configs("camvid", tiny_camvid, "tiny", seeds=1, variants=VARIANTS[:3])
    out = tmp_path / "grid"

    def kill_in_second_run(event):
        if event["index"] == 1 and event["iteration"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(out, runs, progress=kill_in_second_run)
    assert (out / "fcn-seed0" / "result.json").is_file()
    assert not (out / "b1-max-seed0" / "result.json").is_file()
    finished = (out / "fcn-seed0" / "result.json").stat().st_mtime_ns
    seen = []
    results = run_grid(out, runs, progress=lambda e: seen.append((e["run"], e["iteration"])))
    assert [r.variant for r in results] == ["fcn", "b1-max", "b1-avg"]
    assert (out / "fcn-seed0" / "result.json").stat().st_mtime_ns == finished
    assert not any(run == "fcn-seed0" for run, _ in seen)  # the finished run is not redone
    # Killed at step 2 before its checkpoint: resumed from step 1's, so step 1 is not redone.
    assert [i for run, i in seen if run == "b1-max-seed0"] == [2, 3]
    assert [i for run, i in seen if run == "b1-avg-seed0"] == [1, 2, 3]


def result(variant: str, seed: int, miou: float) -> RunResult:
    scores = {"miou": miou, "mean_acc": miou, "pixel_acc": miou + 0.3}
    return RunResult(variant, seed, scores, None, 1.0)


def test_differences_beyond_the_seed_spread_are_marked():
    results = [
        result("fcn", 0, 0.30),
        result("fcn", 1, 0.31),
        result("b1-max", 0, 0.40),
        result("b1-max", 1, 0.41),  # far above the baseline
        result("b1-avg", 0, 0.305),
        result("b1-avg", 1, 0.32),  # within the spread
        result("b1236-avg", 0, 0.50),  # one seed: no spread to compare with
    ]
    summary = summarise(results)
    assert summary["fcn"]["miou"] == pytest.approx(30.5)
    assert summary["fcn"]["miou_std"] == pytest.approx(0.7071, abs=1e-3)
    lines = {
        line.split("|")[1].strip(): line
        for line in markdown(results, "t").splitlines()
        if line.startswith("| ResNet50")
    }
    assert "40.50 ± 0.71 *" in lines["ResNet50+B1+MAX"]
    assert "*" not in lines["ResNet50+B1+AVE"].split("|")[2]
    assert "*" not in lines["ResNet50+B1236+AVE"].split("|")[2]
    assert "not run" in lines["ResNet50+B1236+MAX"]


def test_the_paper_s_orderings_are_judged_against_the_noise():
    results = [
        result("fcn", 0, 0.30),
        result("fcn", 1, 0.31),
        result("b1-max", 0, 0.40),
        result("b1-max", 1, 0.41),  # beats fcn: holds
        result("b1-avg", 0, 0.36),
        result("b1-avg", 1, 0.37),  # under b1-max: reversed
        result("aux-0", 0, 0.305),
        result("aux-0", 1, 0.32),  # close to fcn: within noise
        result("b1236-max", 0, 0.50),  # one seed: within noise
    ]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in markdown(results, "t").splitlines()
        if line.startswith("| ") and "Δ" not in line
    }
    assert rows["one bin beats the baseline (max)"] == ["+2.71", "+10.00", "1.00", "holds"]
    assert rows["average beats max pooling (B1)"][1:] == ["-4.00", "1.00", "reversed"]
    assert rows["the aux loss (α = 0.4) helps"][1:] == ["-0.75", "1.50", "within noise"]
    assert rows["bins 1,2,3,6 beat one bin (max)"][1:] == ["+9.50", "n/a", "within noise"]
    assert rows["dimension reduction helps (avg)"][1] == "not run"


def test_shards_split_the_grid_and_one_report_covers_them(tiny_camvid, tmp_path, capsys):
    from pspnet.reproduce.ablation import shard_runs

    runs = grid_configs("camvid", tiny_camvid, "tiny", seeds=2)
    halves = [shard_runs(runs, (i, 2)) for i in range(2)]
    assert sorted(r[0] for half in halves for r in half) == sorted(r[0] for r in runs)
    assert not {r[0] for r in halves[0]} & {r[0] for r in halves[1]}
    out = tmp_path / "grid"
    argv = [
        "reproduce",
        "ablation",
        "--root",
        str(tiny_camvid),
        "--budget",
        "tiny",
        "--out",
        str(out),
        "--seeds",
        "1",
    ]
    assert main([*argv, "--shard", "1/3"]) == 0
    trained = sorted(p.parent.name for p in out.glob("*/result.json"))
    assert trained == sorted(r[0] for r in shard_runs(runs[::2], (1, 3)))  # seed 0 only
    assert "not run" in (out / "ablation.md").read_text()
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        main([*argv, "--shard", "4/3"])
    assert stopped.value.code == 2 and "0 <= I < K" in capsys.readouterr().err


def test_budgets_differ_only_in_size():
    from pspnet.reproduce.ablation import BUDGETS

    assert BUDGETS["gpu"].device == "cuda" and BUDGETS["cpu"].device == "cpu"
    cpu = grid_configs("camvid", "root", "cpu", seeds=1)[0][3]
    assert (cpu.iterations, cpu.batch_size, cpu.data.workers) == (1000, 8, 2)  # as run in docs/
