"""The training config: every value is checked on load, and errors name the dotted key."""

from pathlib import Path

import pytest

from pspnet.config import DataConfig, LossConfig, OptimConfig, TrainConfig, load_train_config
from pspnet.errors import ConfigError
from pspnet.models.pspnet import ModelConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))

# (override, the key the message must name, the accepted range it must state)
BAD_OVERRIDES = [
    ("iterations=0", "iterations", ">= 1"),
    ("batch_size=-2", "batch_size", ">= 1"),
    ("batch_size=0", "batch_size", ">= 1"),
    ("aux_weight=-0.4", "aux_weight", ">= 0"),
    ("ignore_index=-1", "ignore_index", "0..255"),
    ("ignore_index=256", "ignore_index", "0..255"),
    ("val_every=-1", "val_every", ">= 0"),
    ("checkpoint_every=0", "checkpoint_every", ">= 1"),
    ("log_every=0", "log_every", ">= 1"),
    ("seed=-1", "seed", "0..4294967295"),
    ("val_limit=-5", "val_limit", ">= 0"),
    ("optim.lr=0", "optim.lr", "> 0"),
    ("optim.lr=-0.01", "optim.lr", "> 0"),
    ("optim.momentum=1.5", "optim.momentum", "[0, 1]"),
    ("optim.momentum=-0.1", "optim.momentum", "[0, 1]"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay", ">= 0"),  # YAML 1.2 float
    ("optim.power=0", "optim.power", "> 0"),
    ("optim.head_lr_mult=0", "optim.head_lr_mult", "> 0"),
    ("data.crop_size=[0,473]", "data.crop_size", "two integers >= 1"),
    ("data.crop_size=[473,-1]", "data.crop_size", "two integers >= 1"),
    ("data.scale=[0,2]", "data.scale", "0 < low <= high"),
    ("data.scale=[2.0,0.5]", "data.scale", "0 < low <= high"),
    ("data.rotate=[10,-10]", "data.rotate", "low <= high"),
    ("data.workers=-1", "data.workers", ">= 0"),
    ("data.num_classes=0", "data.num_classes", ">= 1"),
    ("model.num_classes=0", "model.num_classes", "positive"),
    ("loss.class_weights=[1,2]", "loss.class_weights", "11 weights, one per class"),
]

# Values of the wrong kind: refused by type, before any range is checked.
BAD_TYPES = [
    ("batch_size=true", "batch_size"),
    ("iterations=1e3", "iterations"),
    ("seed=2.5", "seed"),
    ("optim.lr=true", "optim.lr"),
    ("optim.lr='0.01'", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.momentum=.inf", "optim.momentum"),
    ("aux_weight=.nan", "aux_weight"),
    ("aux_weight=-.inf", "aux_weight"),
    ("data.crop_size=[32.5,32]", "data.crop_size"),
    ("data.crop_size=[32]", "data.crop_size"),
    ("data.scale=[0.5,.inf]", "data.scale"),
    ("data.rotate=[.nan,10]", "data.rotate"),
    ("data.workers=false", "data.workers"),
    ("evaluation.stride_rate=.nan", "evaluation.stride_rate"),
    ("model.num_classes=true", "model.num_classes"),
]


@pytest.mark.parametrize(("override", "key", "accepted"), BAD_OVERRIDES, ids=lambda v: str(v))
def test_out_of_range_value_is_refused_naming_key_and_range(override, key, accepted):
    with pytest.raises(ConfigError) as caught:
        load_train_config(None, [override])
    message = str(caught.value)
    assert message.startswith(f"overrides: {key} must be "), message
    assert accepted in message


@pytest.mark.parametrize(("override", "key"), BAD_TYPES, ids=lambda v: str(v))
def test_value_of_the_wrong_type_is_refused_naming_key(override, key):
    with pytest.raises(ConfigError) as caught:
        load_train_config(None, [override])
    assert str(caught.value).startswith(f"overrides: {key}: expected "), str(caught.value)


def test_errors_name_the_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: optim\.lr must be a finite number > 0"):
        load_train_config(path)
    with pytest.raises(ConfigError, match=rf"^{path} \+ overrides: data\.workers must be"):
        load_train_config(path, ["data.workers=-1"])


def test_unknown_nested_key_is_named_dotted():
    with pytest.raises(ConfigError, match=r"^overrides: unknown key\(s\) \['optim\.lr_mult'\]"):
        load_train_config(None, ["optim.lr_mult=10"])


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: TrainConfig(ModelConfig(4), batch_size=-2), "batch_size"),
        (lambda: TrainConfig(ModelConfig(4), log_every=True), "log_every"),
        (lambda: OptimConfig(lr=float("nan")), "lr"),
        (lambda: DataConfig(crop_size=(32,)), "crop_size"),
        (lambda: DataConfig(scale=(1.0, float("inf"))), "scale"),
        (
            lambda: TrainConfig(ModelConfig(4), loss=LossConfig(class_weights=(1.0, 2.0))),
            "loss.class_weights",
        ),
    ],
    ids=["batch_size", "log_every", "lr", "crop_size", "scale", "class_weights"],
)
def test_dataclasses_built_in_code_are_checked_too(build, key):
    with pytest.raises(ConfigError, match=rf"^{key} must be "):
        build()


def test_defaults_load():
    config = load_train_config(None)
    assert config.batch_size == 16 and config.model.num_classes == 11  # camvid


@pytest.mark.parametrize(
    "overrides",
    [
        ["val_every=0", "aux_weight=0", "optim.momentum=0", "optim.weight_decay=0"],
        ["ignore_index=0", "seed=4294967295", "data.workers=0", "data.scale=null"],
        ["data.rotate=null", "data.scale=[1,1]", "data.rotate=[0,0]", "optim.momentum=1"],
        ["optim.lr=1", "data.crop_size=[1,1]", "iterations=1", "batch_size=1"],
    ],
)
def test_boundary_values_load(overrides):
    load_train_config(None, overrides)


def test_exponent_without_a_dot_reads_as_a_float():
    # PyYAML (YAML 1.1) reads 1e-4 as a string; the config reads it as YAML 1.2 does.
    assert load_train_config(None, ["optim.weight_decay=1e-4"]).optim.weight_decay == 1e-4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_repo_configs_load(path):
    assert CONFIGS
    config = load_train_config(path)
    assert load_train_config(path, [f"batch_size={config.batch_size}"]) == config


def test_the_thin_classes_config_is_the_cpu_config_with_class_weights():
    folder = CONFIGS[0].parent
    thin = load_train_config(folder / "camvid_pspnet_r18_cpu_thin.yaml")
    cpu = load_train_config(folder / "camvid_pspnet_r18_cpu.yaml", ["loss.class_weights=auto"])
    assert thin.loss.class_weights == "auto" and thin == cpu


def test_bands_and_per_band_statistics_are_checked_against_in_channels():
    four = ["model.in_channels=4", "data.bands=[4,3,2,8]"]
    config = load_train_config(None, [*four, "data.mean=auto", "data.std=[1,2,3,4]"])
    assert config.data.bands == (4, 3, 2, 8) and config.data.mean == "auto"
    assert config.data.std == (1.0, 2.0, 3.0, 4.0) and config.data.measures_bands
    assert load_train_config(None).data.normalization(3).eight_bit_rgb  # ImageNet's RGB
    refusals = [
        (["model.in_channels=4"], r"data\.mean must be 4 values or auto .* \(null is ImageNet"),
        ([*four, "data.mean=[1,2,3]", "data.std=auto"], r"data\.mean must be 4 values"),
        (["data.bands=[1,2]"], r"data\.bands must be 3 band numbers"),
        (["data.bands=[0,1,2]"], r"data\.bands must be null or band numbers from 1"),
        (["data.std=[1,0,1]"], r"data\.std must be null, auto or finite numbers"),
        (["data.mean=median"], r"data\.mean: 'median' is not one of \['auto'\]"),
    ]
    for overrides, message in refusals:
        with pytest.raises(ConfigError, match=message):
            load_train_config(None, overrides)
