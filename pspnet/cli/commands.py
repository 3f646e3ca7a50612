"""The subcommands that build, train and describe models: info, convert, data check and
import, train, demo, models and reproduce. Each takes its settings, calls one library
function and does the talking; only rank 0 talks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pspnet.cli.output import ProgressBar, download_bar, say, write
from pspnet.errors import ConfigError

if TYPE_CHECKING:  # for the annotations: the command table in __init__.py imports them
    from pspnet.checkpoints import ConvertSettings
    from pspnet.config import TrainSettings
    from pspnet.data.check import DataCheckSettings
    from pspnet.data.download import DataDownloadSettings
    from pspnet.data.importers import ImportSettings
    from pspnet.demo import DemoSettings
    from pspnet.engine.summary import InfoSettings
    from pspnet.reproduce import AblationSettings
    from pspnet.weights.registry import ModelsSettings


# --- info -------------------------------------------------------------------------------------


def cmd_info(settings: InfoSettings) -> int:
    from pspnet.engine.summary import summarize

    rows = summarize(settings.model(), settings.size, settings.size)
    size = f"{settings.size}x{settings.size}"
    say(f"PSPNet {settings.backbone}, {settings.num_classes} classes, input {size}")
    say(f"{'part':<18}{'parameters':>14}{'GFLOPs':>10}")
    for row in rows:
        say(f"{row.name:<18}{row.parameters:>14,}{row.gflops:>10.1f}")
    for title, kept in (("test", [r for r in rows if r.name != "aux head"]), ("train", rows)):
        total = f"total ({title})"
        say(
            f"{total:<18}{sum(r.parameters for r in kept):>14,}{sum(r.gflops for r in kept):>10.1f}"
        )
    return 0


# --- convert ----------------------------------------------------------------------------------


def cmd_convert(settings: ConvertSettings) -> int:
    from pspnet.checkpoints import load_checkpoint, save_model

    download = download_bar()
    checkpoint = load_checkpoint(settings.src, progress=download.update_to)
    download.close()
    save_model(checkpoint.model, settings.dst, checkpoint.metadata)
    config = checkpoint.config
    say(
        f"wrote {settings.dst}: {config.backbone}, {config.num_classes} classes, "
        f"stem {config.stem}, align_corners {config.align_corners}"
    )
    return 0


# --- data check -------------------------------------------------------------------------------


def cmd_data_check(settings: DataCheckSettings) -> int:
    from pspnet.data.check import check_dataset

    preset = settings.classes.preset(settings.dataset, settings.root)
    bar = ProgressBar(desc=f"checking {settings.split}", unit="pair")
    report = check_dataset(
        settings.root, preset, settings.split, settings.list_file, progress=bar.update_to
    )
    bar.close()
    say(report.to_text(preset.class_names))
    return 1 if report.problems else 0


def cmd_data_import(settings: ImportSettings) -> int:
    from pspnet.data.importers import import_annotations

    bar = ProgressBar(desc=f"importing {settings.format}", unit="image")
    report = import_annotations(
        settings.format,
        settings.source,
        settings.out,
        images=settings.images,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
        background=settings.background,
        classes_file=settings.classes,
        progress=bar.update_to,
    )
    bar.close()
    say(report.to_text())
    say(f"next: pspnet data check {settings.out} --dataset custom --split train")
    return 0


def cmd_data_download(settings: DataDownloadSettings) -> int:
    from pspnet.data.download import download_dataset

    bar = ProgressBar(
        desc=f"downloading {settings.name}", unit="B", unit_scale=True, unit_divisor=1024
    )
    try:
        root = download_dataset(
            settings.name,
            settings.folder(),
            progress=bar.update_to,
            keep_archives=settings.keep_archives,
        )
    finally:
        bar.close()
    say(f"{settings.name} is in {root}; next: pspnet data check {root} --dataset {settings.name}")
    return 0


# --- train ------------------------------------------------------------------------------------


def cmd_train(settings: TrainSettings) -> int:
    from pspnet.engine.train import train

    config = settings.train_config()
    show = TrainingProgress(config.iterations, settings.out)
    try:
        result = train(config, settings.out, resume=settings.resume, callback=show)
    finally:
        show.close()
    say(
        f"done: {result.iteration} iterations, best mIoU {100 * result.best_miou:.2f}, "
        f"checkpoints in {result.run_dir}"
    )
    return 0


class TrainingProgress:
    """Shows a run's events: downloads, the label check, steps, validation (rank 0 only)."""

    def __init__(self, iterations: int, out):
        self.iterations, self.out = iterations, out
        self.bar = ProgressBar(unit="it")
        self.val_bar = ProgressBar(desc="validating", leave=False)
        self.download = download_bar()
        self.check_bar = ProgressBar(desc="checking labels", unit="pair", leave=False)

    def __call__(self, event: dict) -> None:
        getattr(self, "on_" + event["kind"], lambda event: None)(event)

    def on_download(self, event: dict) -> None:
        self.download.update_to(event["done"], event["total"])

    def on_check(self, event: dict) -> None:
        self.check_bar.update_to(event["done"], event["total"])

    def on_class_weights(self, event: dict) -> None:
        self.check_bar.close()
        weights = ", ".join(f"{k} {v:.2f}" for k, v in event["weights"].items())
        say(f"class weights (median frequency): {weights}")

    def on_init(self, event: dict) -> None:
        self.download.close()
        say(event["transfer"].to_text())

    def on_start(self, event: dict) -> None:
        self.check_bar.close()
        self.download.close()
        self.bar.update_to(event["iteration"], self.iterations)
        if event["iteration"]:
            write(f"resuming {self.out} at iteration {event['iteration']}")

    def on_step(self, event: dict) -> None:
        self.bar.update_to(event["iteration"])
        info = {"loss": f"{event['loss']:.3f}", "lr": f"{event['lr']:.2e}"}
        if "images_per_s" in event:
            info["img/s"] = f"{event['images_per_s']:.1f}"
        self.bar.set_postfix(info)

    def on_val_progress(self, event: dict) -> None:
        self.val_bar.update_to(event["done"], event["total"])

    def on_val(self, event: dict) -> None:
        self.val_bar.close()
        m = event["metrics"]
        write(
            f"iteration {event['iteration']}: mIoU {100 * m['miou']:.2f}  "
            f"mAcc {100 * m['mean_acc']:.2f}  aAcc {100 * m['pixel_acc']:.2f}"
        )

    def close(self) -> None:
        for bar in (self.bar, self.val_bar, self.download, self.check_bar):
            bar.close()


# --- demo -------------------------------------------------------------------------------------


def cmd_demo(settings: DemoSettings) -> int:
    from tqdm import tqdm

    from pspnet.demo import run_demo

    say(f"pspnet demo: synthetic scenes, FCN vs PSPNet, {settings.iterations} iterations each")
    bars: dict[str, tqdm] = {}

    def on_event(variant: str, event: dict) -> None:
        if event["kind"] == "start":
            bars[variant] = tqdm(total=settings.iterations, desc=f"training {variant}", unit="it")
        elif event["kind"] == "step":
            bars[variant].update(event["iteration"] - bars[variant].n)
            bars[variant].set_postfix(loss=f"{event['loss']:.3f}", refresh=False)
        elif event["kind"] == "end":
            bars[variant].close()

    result = run_demo(settings, on_event)
    say(f"\nValidation IoU (%):\n{result.table}\n")
    say(f"finished in {result.seconds:.0f} s; report: {result.report}, pictures: {result.grid}")
    return 0


# --- models -----------------------------------------------------------------------------------


def cmd_models(settings: ModelsSettings) -> int:
    from pspnet.weights import cache_dir, registry
    from pspnet.weights.registry import estimated_bytes, is_cached

    entries = [e for e in registry().values() if settings.dataset in (None, e.dataset)]
    pspnets = [e for e in entries if e.kind == "pspnet"]
    backbones = [e for e in entries if e.kind == "backbone" and settings.dataset is None]
    if not pspnets and not backbones:
        known = sorted({e.dataset for e in registry().values() if e.dataset})
        raise ConfigError(f"--dataset {settings.dataset}: no published weights; known: {known}")
    if pspnets:
        speed = " speed here (fastest auto path) |" if settings.speed else ""
        say("| name | dataset | mIoU | ms+flip | size | cached |" + speed)
        say("|:---|:---|---:|---:|---:|:---|" + (":---|" if settings.speed else ""))
        for e in pspnets:
            ms = "n/a" if e.miou_ms_flip is None else f"{e.miou_ms_flip:.2f}"
            cached = "unsupported: " + e.unsupported if e.unsupported else _yes(is_cached(e))
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            row = f"| {e.name} | {e.dataset} | {e.miou:.2f} | {ms} | {size} | {cached} |"
            say(row + (f" {_speed(e)} |" if settings.speed else ""))
    if backbones:
        say("\n| ImageNet backbone | depth | stem | top-1 | size | cached |")
        say("|:---|:---|:---|---:|---:|:---|")
        for e in backbones:
            top1 = "n/a" if e.top1 is None else f"{e.top1:.2f}"
            size = f"~{estimated_bytes(e) / 2**20:.0f} MiB"
            model = e.model
            say(
                f"| {e.name} | {model['backbone']} | {model['stem']} | {top1} | {size} | "
                f"{_yes(is_cached(e))} |"
            )
    say(
        f"\nsizes estimated from the parameter count (fp32); cache: {cache_dir()}; hashes are "
        "the publishers' 8-hex prefixes: they detect corruption, not substitution (the full "
        "SHA-256 is recorded at the first check and enforced after)"
    )
    if settings.speed:
        say("speed here: pspnet benchmark --checkpoint NAME --save measures a model here")
    return 0


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _speed(entry) -> str:
    """The entry's latency and memory here, from ``pspnet benchmark --save``'s records."""
    from pspnet.config import InferenceConfig
    from pspnet.inference.optimized.measured import ModelShape, find_record

    if entry.unsupported:
        return ""
    crop = InferenceConfig(**entry.inference()).crop_size  # what Segmenter keys it by
    record = find_record(ModelShape.of(entry.model_config(), crop))
    if record is None:
        return "not measured"
    path = record.fastest() or record.paths[0]
    return f"{path.median_ms:.0f} ms, {path.memory_mb:.0f} MiB: {path.name} ({record.date})"


# --- reproduce --------------------------------------------------------------------------------


def cmd_reproduce(settings: AblationSettings) -> int:
    from pspnet.reproduce import reproduce_ablation

    bar = ProgressBar(unit="it")

    def progress(event: dict) -> None:
        eta = event["eta_seconds"]
        left = "" if eta is None else f", grid done in ~{eta / 60:.0f} min"
        bar.update_to(event["iteration"], event["iterations"])
        if bar.bar is not None:
            bar.bar.set_description(
                f"run {event['index'] + 1}/{event['total']} {event['run']}{left}", refresh=False
            )
            if event["iteration"] == event["iterations"]:
                bar.close()

    report, chart = reproduce_ablation(settings, progress)
    bar.close()
    say(f"wrote {report} and {chart}")
    return 0
