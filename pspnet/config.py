"""Training configuration: frozen, typed dataclasses read from YAML, overridable by ``key=value``.

Defaults are the paper's recipe (Zhao et al., 2017, section 4.1): SGD momentum 0.9, weight decay
1e-4, poly learning rate with base 0.01 and power 0.9, 10x for the new layers, batch 16,
loss = main + 0.4 x aux, ignore label 255, the full augmentation.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pspnet.checkpoints.transfer import Classifier
from pspnet.data.normalization import BandStats, Normalization
from pspnet.data.presets import IGNORE_INDEX, DatasetPreset, get_preset
from pspnet.data.transforms import Augmentation
from pspnet.errors import ConfigError
from pspnet.models.pspnet import ModelConfig
from pspnet.settings import check_settings, setting

TrainingPrecision = Literal["fp32", "bf16", "fp16"]
Mode = Literal["whole", "slide"]


@dataclass(frozen=True)
class DataConfig(Augmentation):
    """Where the data is and how it is augmented (crop_size, scale, rotate, blur and flip:
    :class:`~pspnet.data.transforms.Augmentation`'s fields).

    Attributes:
        dataset: preset name: ade20k, voc, cityscapes, camvid, loveda, potsdam, vaihingen,
            isaid, coco_stuff10k, coco_stuff164k, pascal_context(_59) or custom.
        root: dataset root folder.
        train_split: split (list name) to train on.
        val_split: split to validate on.
        num_classes: class count of a custom dataset.
        names_file: class names (and colours) of a custom dataset: one class per line,
            ``name`` or ``name R G B``, or CVAT's ``labelmap.txt``; a custom dataset whose
            root holds ``classes.txt`` (what ``pspnet data import`` writes) uses it by default.
        label_map: ``{stored value: train id}`` applied to index labels before training
            (values not listed keep the preset's mapping; a train id of 255 ignores the value),
            e.g. ``{255: 1}`` for 0/255 binary masks.
        workers: data-loading processes per rank.
        bands: the images' bands the model takes, 1-based in the file's order (GDAL's
            numbering), e.g. [4, 3, 2, 8]; null: the first model.in_channels bands.
        mean: per-band mean in the files' units (one per band taken); null: ImageNet's for
            8-bit RGB (3 bands); auto: measured over the training images before the first
            step (written to normalization.json in the run folder). Saved with the weights,
            so evaluation and inference normalise alike.
        std: per-band standard deviation, as mean (null: ImageNet's; auto: measured).
        sample_window: train on a random window of this many pixels a side of each image,
            read from disk (TIFF tiles window by window), before the augmentation; for large
            tiles such as Potsdam's 6,000 x 6,000. null: whole images.
    """

    dataset: str = "camvid"
    root: str = "data/camvid"
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int | None = None
    names_file: str | None = None
    label_map: dict[int, int] | None = None
    workers: int = 2
    bands: tuple[int, ...] | None = None
    mean: Literal["auto"] | tuple[float, ...] | None = None
    std: Literal["auto"] | tuple[float, ...] | None = None
    sample_window: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes is not None:
            _integer(self, "num_classes", 1)
        if self.label_map is not None:
            _require(
                all(0 <= v <= 255 for pair in self.label_map.items() for v in pair),
                "label_map",
                "a mapping of stored values 0..255 to train ids 0..255",
                self.label_map,
            )
        _integer(self, "workers", 0)
        if self.sample_window is not None:
            _integer(self, "sample_window", 1)
        if self.bands is not None:
            _require(
                len(self.bands) > 0 and all(_is_int(b) and b >= 1 for b in self.bands),
                "bands",
                "null or band numbers from 1, e.g. [4, 3, 2]",
                self.bands,
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, tuple):
                low = 0 if name == "std" else -math.inf
                _require(
                    len(values) > 0 and all(_is_finite(v) and v > low for v in values),
                    name,
                    "null, auto or finite numbers, one per band"
                    + (" (positive)" if name == "std" else ""),
                    list(values),
                )

    @property
    def measures_bands(self) -> bool:
        """Whether mean or std is measured over the training images (auto)."""
        return "auto" in (self.mean, self.std)

    def normalization(self, in_channels: int, stats: BandStats | None = None) -> Normalization:
        """The bands and statistics a model of ``in_channels`` bands is normalised with;
        ``stats`` (the training images') give those declared auto."""
        return Normalization.declared(self.mean, self.std, self.bands, in_channels, stats)

    def preset(self) -> DatasetPreset:
        """The dataset preset these settings describe (label_map applied)."""
        return get_preset(
            self.dataset, self.num_classes, self.names_file, self.label_map, self.root
        )


@dataclass(frozen=True)
class OptimConfig:
    """SGD with the poly schedule: lr = base x (1 - iteration / iterations) ^ power.

    Attributes:
        lr: base learning rate of the pretrained backbone.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        power: exponent of the poly schedule.
        head_lr_mult: multiplier of the new layers' (pyramid, head, aux) learning rate.
        fused: one fused kernel per step for every parameter (same update; fewer launches,
            which counts on a GPU).
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9
    head_lr_mult: float = 10.0
    fused: bool = False

    def __post_init__(self) -> None:
        _number(self, "lr", 0, low_inclusive=False)
        _number(self, "momentum", 0, 1)
        _number(self, "weight_decay", 0)
        _number(self, "power", 0, low_inclusive=False)
        _number(self, "head_lr_mult", 0, low_inclusive=False)


@dataclass(frozen=True)
class LossConfig:
    """What the training loss weighs: classes, and hard pixels (online hard example mining).

    Attributes:
        class_weights: null (every class 1), auto (median frequency balancing over the
            training labels, as SegNet weighed CamVid: the median class frequency over each
            class's own, so rare classes weigh more) or one weight per class.
        ohem_thresh: online hard example mining: train only on pixels whose true-class
            probability is below this (at least ohem_min_kept of them per batch); null: off.
        ohem_min_kept: with ohem_thresh, the fewest pixels kept per (global) batch: the
            hardest ones when too few fall below the threshold.
    """

    class_weights: Literal["auto"] | tuple[float, ...] | None = None
    ohem_thresh: float | None = None
    ohem_min_kept: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.class_weights, tuple):
            _require(
                len(self.class_weights) > 0
                and all(_is_finite(w) and w >= 0 for w in self.class_weights),
                "class_weights",
                "null, auto or a list of finite weights >= 0, one per class",
                list(self.class_weights),
            )
        if self.ohem_thresh is not None:
            _number(self, "ohem_thresh", 0, 1, low_inclusive=False)
        _integer(self, "ohem_min_kept", 0)


@dataclass(frozen=True)
class InferenceConfig:
    """How an image becomes probabilities; defaults are semseg's single-scale test.

    Attributes:
        mode: "slide" (crop-sized windows, semseg's protocol) or "whole" (the scaled image in
            one forward pass, no padding).
        crop_size: window (height, width), the training crop, e.g. 473 473 or 713 713.
        stride_rate: window stride as a fraction of the crop, rounded up (semseg: 2/3).
        scales: multipliers of base_size; the paper's multi-scale test uses 0.5 0.75 1.0 1.25
            1.5 1.75.
        base_size: the long side that scale 1.0 maps to (semseg: 512 ADE20K and VOC, 2048
            Cityscapes); None keeps each image's own long side.
        flip: also run the left-right mirror and average the probabilities (semseg's test
            always does).
        window_batch: windows per forward pass (their mirrors ride in the same pass).
        fit_within: LONG SHORT: scale each image, keeping its aspect ratio, by the largest
            factor that keeps its sides within them (mmseg's test resize, e.g. 2048 512);
            replaces base_size.
    """

    mode: Mode = "slide"
    crop_size: tuple[int, int] = setting((473, 473), flag="--crop", metavar=("H", "W"), low=1)
    stride_rate: float = setting(2 / 3, low=0, low_open=True, high=1)
    scales: tuple[float, ...] = setting((1.0,), low=0, low_open=True)
    base_size: int | None = setting(None, low=1)
    flip: bool = True
    window_batch: int = setting(1, low=1)
    fit_within: tuple[int, int] | None = setting(None, metavar=("LONG", "SHORT"), low=1)

    def __post_init__(self) -> None:
        # YAML and JSON give lists, and sizes written as 473.0: hold them as the types say.
        object.__setattr__(self, "crop_size", _numbers(self.crop_size, int))
        object.__setattr__(self, "scales", _numbers(self.scales, float))
        if self.fit_within is not None:
            object.__setattr__(self, "fit_within", _numbers(self.fit_within, int))
        check_settings(self)


def _numbers(values: Any, kind: type) -> Any:
    """``values`` as a tuple of ``kind`` when they are whole numbers, else as given (refused
    by the check that follows)."""
    if not isinstance(values, (list, tuple)) or not all(map(_is_finite, values)):
        return values
    if kind is int and any(v != int(v) for v in values):
        return tuple(values)
    return tuple(kind(v) for v in values)


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the resolved config is written into the run folder.

    Attributes:
        model: the network (num_classes defaults to the dataset's).
        data: dataset and augmentation.
        optim: optimiser and schedule.
        evaluation: how validation runs inference (whole image or sliding window).
        iterations: total optimiser steps.
        batch_size: global batch, split evenly over the processes.
        loss: class weights and hard example mining.
        aux_weight: weight of the auxiliary loss (0 switches it off).
        ignore_index: label value excluded from loss and metrics.
        val_every: validate every this many iterations (0: only at the end).
        checkpoint_every: write the resumable state every this many iterations.
        log_every: write scalars every this many iterations.
        seed: seeds data order, augmentation and initialisation.
        backbone_weights: ImageNet ResNet file (torchvision or semseg layout), or None.
        init: a trained segmentation model to start from (a native, semseg or mmseg
            checkpoint, a published name or a URL): every weight is loaded; classifier rows
            follow the classes by name (see init_classes). A run folder's last.pt wins.
        init_classes: ``{our class: the init model's class}`` for names that differ, e.g.
            ``{pedestrian: person}``; other classes are matched by name, case-insensitively.
        init_classifier: by_name (carry the rows of classes both models have, initialise the
            rest) or fresh (initialise every classifier row).
        precision: fp32, or bf16/fp16 autocast (fp16 with a gradient scaler, CUDA only).
        channels_last: NHWC memory format (faster convolutions on recent CPUs and GPUs).
        compile: train the ``torch.compile``-d model (the first steps compile it; pays on long
            runs on a GPU).
        device: auto (CUDA when present), cpu or cuda.
        val_limit: validate on at most this many images (0: all).
    """

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    evaluation: InferenceConfig = field(default_factory=InferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    iterations: int = 1000
    batch_size: int = 16
    aux_weight: float = 0.4
    ignore_index: int = IGNORE_INDEX
    val_every: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    backbone_weights: str | None = None
    init: str | None = None
    init_classes: dict[str, str] | None = None
    init_classifier: Classifier = "by_name"
    precision: TrainingPrecision = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    val_limit: int = 0

    def __post_init__(self) -> None:
        _integer(self, "iterations", 1)
        _integer(self, "batch_size", 1)
        _number(self, "aux_weight", 0)
        _integer(self, "ignore_index", 0, 255)  # labels are 8-bit images
        _integer(self, "val_every", 0)  # 0: validate only at the end
        _integer(self, "checkpoint_every", 1)  # train() takes iteration % checkpoint_every
        _integer(self, "log_every", 1)  # and iteration % log_every
        _integer(self, "seed", 0, 2**32 - 1)  # the sampler multiplies it into a 64-bit seed
        _integer(self, "val_limit", 0)  # 0: every validation image
        self._check_bands()
        weights = self.loss.class_weights
        if isinstance(weights, tuple):
            classes = self.model.num_classes
            _require(
                len(weights) == classes,
                "loss.class_weights",
                f"{classes} weights, one per class of model.num_classes",
                list(weights),
            )

    def _check_bands(self) -> None:
        """data.bands, mean and std give one value per band of model.in_channels."""
        data, channels = self.data, self.model.in_channels
        if data.bands is not None:
            _require(
                len(data.bands) == channels,
                "data.bands",
                f"{channels} band numbers, one per band of model.in_channels",
                list(data.bands),
            )
        for name in ("mean", "std"):
            values = getattr(data, name)
            if values is None:
                _require(
                    channels == 3,
                    f"data.{name}",
                    f"{channels} values or auto for a model of {channels} bands (null is "
                    "ImageNet's, for 8-bit RGB)",
                    values,
                )
            elif values != "auto":
                _require(
                    len(values) == channels,
                    f"data.{name}",
                    f"{channels} values, one per band of model.in_channels",
                    list(values),
                )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """``pspnet train``: a run of the paper's recipe, resumable.

    Attributes:
        config: YAML config (configs/*.yaml); the paper's recipe on CamVid when none.
        overrides: override config fields, e.g. optim.lr=0.02 data.crop_size=[321,321];
            repeat --set or give several (each applies, later ones win for the same key).
        out: run folder; a run it holds (last.pt) resumes.
        resume: resume the run in out from its last.pt (--no-resume: start over).
    """

    config: Path | None = None
    overrides: tuple[str, ...] = setting((), flag="--set", repeat=True, metavar="KEY=VALUE")
    out: Path
    resume: bool = setting(True, flag="--no-resume")

    def __post_init__(self) -> None:
        check_settings(self)

    def train_config(self) -> TrainConfig:
        """The run's configuration: the file with the overrides applied."""
        return load_train_config(self.config, self.overrides)


def _require(ok: bool, name: str, requirement: str, value: Any) -> None:
    """Raise ``ConfigError("NAME must be REQUIREMENT, got VALUE")`` unless ``ok``.

    The message starts with the field's name, so that :func:`build` can prefix the section
    it belongs to: ``data.crop_size must be ...``.
    """
    if not ok:
        raise ConfigError(f"{name} must be {requirement}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(config: Any, name: str, low: int, high: int | None = None) -> None:
    """Require ``config.<name>`` to be an int in ``low..high`` (no upper bound when None)."""
    value = getattr(config, name)
    ok = _is_int(value) and value >= low and (high is None or value <= high)
    _require(
        ok, name, f"an integer >= {low}" if high is None else f"an integer in {low}..{high}", value
    )


def _number(
    config: Any, name: str, low: float, high: float = math.inf, *, low_inclusive: bool = True
) -> None:
    """Require ``config.<name>`` to be a finite number in ``[low, high]`` (``(low, high]``)."""
    value = getattr(config, name)
    ok = _is_finite(value) and (value >= low if low_inclusive else value > low) and value <= high
    if high == math.inf:
        limits = f"{'>=' if low_inclusive else '>'} {low:g}"
    else:
        limits = f"in {'[' if low_inclusive else '('}{low:g}, {high:g}]"
    _require(ok, name, f"a finite number {limits}", value)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so YAML holds no Python-specific tags."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading ``1e-4`` as a float, as YAML 1.2 does (1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides (values parsed as YAML).

    ``model.num_classes`` defaults to the dataset preset's class count. Every value's type and
    range is checked here; a :class:`ConfigError` names the source and the dotted key.
    """
    raw: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = yaml.load(Path(path).read_text(), Loader=_Loader) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the config ({err})") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.02")
        target = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        target[leaf] = yaml.load(text, Loader=_Loader)
    if overrides:
        source = "overrides" if path is None else f"{path} + overrides"
    model = raw.setdefault("model", {})
    if isinstance(model, dict) and "num_classes" not in model:
        data = raw.get("data", {})
        model["num_classes"] = _dataset_classes(data, source)
    return build(TrainConfig, raw, source)


def _dataset_classes(data: dict, source: str) -> int:
    config = build(DataConfig, data, source, "data")
    try:
        return config.preset().num_classes
    except Exception as err:
        raise ConfigError(f"{source}: data.dataset={config.dataset!r}: {err}") from err


def build(cls: type, values: Any, source: str, section: str = "") -> Any:
    """Construct dataclass ``cls`` from plain ``values``, checking names, types and ranges.

    Args:
        cls: the dataclass to build.
        values: its fields, as YAML gives them.
        source: where the values come from (a file, "defaults", "overrides"); starts errors.
        section: the dotted path of ``cls`` in the whole config ("" at the top, "data"),
            so that errors name keys as ``data.crop_size``.
    """
    prefix = f"{section}." if section else ""
    if not isinstance(values, dict):
        where = section or "top level"
        raise ConfigError(
            f"{source}: {where}: expected a mapping of {cls.__name__}, got {values!r}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(f"{prefix}{key}" for key in set(values) - names)
    if unknown:
        valid = sorted(prefix + name for name in names)
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}")
    kwargs = {
        name: _coerce(hints[name], value, source, prefix + name) for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as err:  # __post_init__ messages start with the field's name
        raise ConfigError(f"{source}: {prefix}{err}") from err
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{source}: {section or cls.__name__}: {err}") from err


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    """``value`` as type ``hint``, refusing bools and strings for numbers and NaN or inf."""
    where = f"{source}: {key}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, source, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{255: 1}}, got {value!r}")
        return {
            _coerce(args[0], k, source, key): _coerce(args[1], v, source, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(a, v, source, key) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    if hint is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
