"""The registry: every published PSPNet builds and converts; names resolve through the cache."""

import hashlib
import http.server
import importlib
import threading

import pytest
import torch
import yaml
from layouts import mmseg_checkpoint

import pspnet
from pspnet.checkpoints import build_model, mmseg
from pspnet.checkpoints.loaded import classes_of
from pspnet.cli import main
from pspnet.data.presets import PRESETS
from pspnet.errors import CheckpointError, ConfigError
from pspnet.inference import Segmenter
from pspnet.models import ModelConfig, PSPNet
from pspnet.weights import resolve
from pspnet.weights.registry import find, imagenet_backbone, registry

# The module, not the function pspnet.weights exports under the same name.
registry_module = importlib.import_module("pspnet.weights.registry")
ENTRIES = sorted(registry().values(), key=lambda entry: entry.name)
PSPNETS = [e for e in ENTRIES if e.kind == "pspnet"]


def test_the_registry_lists_every_metafile_entry_with_its_source_numbers():
    assert len(PSPNETS) == 54  # metafile.yaml lists 54 PSPNet weights files (one name twice)
    assert len({e.url for e in PSPNETS}) == 54
    ade = find("pspnet_r50-d8_4xb4-80k_ade20k-512x512")
    assert (ade.miou, ade.miou_ms_flip, ade.num_classes, ade.dataset) == (
        41.13,
        41.94,
        150,
        "ade20k",
    )
    for entry in ENTRIES:
        assert entry.url.startswith("https://download.")
        assert entry.sha256_prefix in entry.file_name  # the prefix torch.hub reads from the name


def test_every_published_pspnet_names_its_classes_through_its_datasets_preset():
    for entry in PSPNETS:
        preset = PRESETS.get(entry.dataset)
        assert preset is not None, f"{entry.name}: no preset for dataset {entry.dataset!r}"
        assert preset.num_classes == entry.num_classes, entry.name
        # What a loaded published checkpoint names its classes with (its metadata's dataset).
        names, palette = classes_of({"dataset": entry.dataset}, entry.num_classes)
        assert (names, palette) == (preset.class_names, preset.palette), entry.name


@pytest.mark.parametrize("entry", [e for e in PSPNETS if not e.unsupported], ids=lambda e: e.name)
def test_every_supported_entry_builds_and_its_layout_converts(entry):
    config = entry.model_config()
    with torch.device("meta"):
        state = PSPNet.from_config(config).state_dict()
    checkpoint = mmseg_checkpoint(state, config)
    assert mmseg.matches(checkpoint)
    converted, renamed = mmseg.convert(checkpoint, source=entry.name)
    # align_corners (a test-time setting) and the strides and dilations (d8 or d32) are not in
    # the weights: the converter reads mmseg's d8 defaults, the registry supplies the rest.
    unseen = {"align_corners": False, "output_stride": 8, "stage_dilations": None}
    assert set(unseen) == set(mmseg.NOT_IN_WEIGHTS)
    assert converted == ModelConfig(**{**config.__dict__, **unseen})
    assert renamed.keys() == state.keys()


def test_unsupported_entries_say_why_and_are_refused(tmp_path, monkeypatch):
    # Every published PSPNet loads today; an entry marked unsupported is refused with its reason.
    assert all(e.unsupported is None for e in PSPNETS)
    reason = "a geometry the converters cannot express, named here"
    entry = {
        "name": "pspnet_unloadable",
        "url": "https://download.example.com/pspnet_unloadable-0123abcd.pth",
        "sha256_prefix": "0123abcd",
        "num_classes": 19,
        "unsupported": reason,
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"pspnet": [entry], "backbones": []}))
    monkeypatch.setattr(registry_module, "REGISTRY_FILE", path)
    with pytest.raises(CheckpointError, match="not loadable") as error:
        resolve("pspnet_unloadable")
    assert reason in str(error.value)


def test_publisher_settings_become_inference_defaults():
    entry = find("pspnet_r101-d8_4xb2-80k_cityscapes-769x769")
    settings = entry.inference()
    assert settings["mode"] == "slide" and settings["crop_size"] == [769, 769]
    assert settings["fit_within"] == [2049, 1025] and settings["flip"] is False
    assert entry.model_config().align_corners is True


def test_imagenet_picks_the_backbone_of_the_depth_and_stem():
    assert imagenet_backbone("resnet50", "deep_narrow").name == "openmmlab_resnet50_v1c"
    assert imagenet_backbone("resnet101", "torchvision").name == "torchvision_resnet101_v1"
    with pytest.raises(ConfigError, match="resnet50 with stem 'deep'"):
        imagenet_backbone("resnet50", "deep")


@pytest.fixture
def local_registry(tmp_path, monkeypatch, trained):
    """A registry of one tiny PSPNet and one tiny backbone, served from 127.0.0.1."""
    monkeypatch.setenv("PSPNET_HOME", str(tmp_path / "cache"))
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = files[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def serve(name: str, data: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()[:8]
        files[f"{name}-{digest}.pth"] = data
        return f"{base}/{name}-{digest}.pth", digest

    model_fields = {
        "backbone": "resnet18",
        "stem": "deep_narrow",
        "align_corners": True,
        "basic_block_dilation": "first_conv",  # mmseg's BasicBlock
    }
    config = ModelConfig(11, contract_dilation=True, base_width=4, **model_fields)
    model = trained(PSPNet.from_config(config))
    torch.save(mmseg_checkpoint(model.state_dict(), config), tmp_path / "m.pth")
    url, digest = serve("tiny_pspnet", (tmp_path / "m.pth").read_bytes())
    backbone = {
        k.removeprefix("backbone."): v
        for k, v in mmseg_checkpoint(model.state_dict(), config)["state_dict"].items()
        if k.startswith("backbone.")
    }
    backbone_url, backbone_digest = serve("tiny_v1c", _saved(backbone, tmp_path / "b.pth"))
    listing = {
        "pspnet": [
            {
                "name": "tiny_pspnet_camvid",
                "dataset": "camvid",
                "num_classes": 11,
                "model": {**model_fields, "base_width": 4},
                "test": {
                    "mode": "slide",
                    "crop_size": [24, 24],
                    "stride": [16, 16],
                    "resize": [40, 30],
                },
                "miou": 12.34,
                "miou_ms_flip": 13.57,
                "url": url,
                "sha256_prefix": digest,
            }
        ],
        "backbones": [
            {
                "name": "tiny_resnet18_v1c",
                "model": {"backbone": "resnet18", "stem": "deep_narrow"},
                "url": backbone_url,
                "sha256_prefix": backbone_digest,
            }
        ],
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(listing))
    monkeypatch.setattr(registry_module, "REGISTRY_FILE", path)
    yield model
    httpd.shutdown()
    httpd.server_close()


def _saved(state: dict, path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


def test_a_registry_name_loads_with_its_publishers_settings(local_registry):
    loaded = pspnet.load_model("tiny_pspnet_camvid")
    assert loaded.config.align_corners is True  # from the registry, not the weights
    assert torch.equal(loaded.head.classifier.weight, local_registry.head.classifier.weight)
    segmenter = Segmenter.from_checkpoint("tiny_pspnet_camvid")
    assert segmenter.inference.mode == "slide" and segmenter.inference.crop_size == (24, 24)
    assert segmenter.inference.fit_within == (40, 30) and segmenter.inference.flip is False
    assert segmenter.class_names[0] == "Sky"  # the camvid preset, named by the registry


def test_eval_by_name_prints_the_published_miou(local_registry, tiny_camvid, capsys):
    argv = ["eval", "--checkpoint", "tiny_pspnet_camvid", "--root", str(tiny_camvid)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "published mIoU of tiny_pspnet_camvid: 12.34 single-scale, 13.57" in out
    assert "measured here: " in out and "slide, crop 24x24" in out


def test_models_lists_the_registry_and_what_is_cached(local_registry, capsys):
    assert main(["models"]) == 0
    before = capsys.readouterr().out
    assert "| tiny_pspnet_camvid | camvid | 12.34 | 13.57 |" in before
    assert before.count("| no |") == 2
    pspnet.load_model("tiny_pspnet_camvid")
    assert main(["models", "--dataset", "camvid"]) == 0
    after = capsys.readouterr().out
    assert "| yes |" in after and "tiny_resnet18_v1c" not in after


def test_training_from_imagenet_by_name(local_registry):
    config = ModelConfig(11, "resnet18", "deep_narrow", contract_dilation=True, base_width=4)
    model = build_model(config, "imagenet")
    expected = local_registry.backbone.state_dict()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_training_downloads_its_backbone_by_name_with_progress(
    local_registry, tiny_camvid, tmp_path
):
    from helpers import tiny_overrides

    from pspnet.config import load_train_config
    from pspnet.engine.train import train

    overrides = [
        *tiny_overrides(tiny_camvid, iterations=1),
        "model.stem=deep_narrow",
        "backbone_weights=tiny_resnet18_v1c",
    ]
    events = []
    train(load_train_config(None, overrides), tmp_path / "run", callback=events.append)
    downloads = [e for e in events if e["kind"] == "download"]
    assert downloads and downloads[-1]["done"] == downloads[-1]["total"] > 0
    assert events.index(downloads[-1]) < next(
        i for i, e in enumerate(events) if e["kind"] == "start"
    )


def test_a_registry_download_is_bounded_by_twice_its_estimated_size(local_registry, monkeypatch):
    weights = importlib.import_module("pspnet.weights")
    monkeypatch.setattr(weights, "estimated_bytes", lambda entry: 1000)
    with pytest.raises(CheckpointError, match="over the limit of 2,000 bytes"):
        resolve("tiny_pspnet_camvid")
    monkeypatch.setenv("PSPNET_MAX_DOWNLOAD_BYTES", str(10 << 20))  # the user's override
    path, entry = resolve("tiny_pspnet_camvid")
    assert entry.name == "tiny_pspnet_camvid" and path.is_file()
