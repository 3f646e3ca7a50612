"""What each dataset calls its classes, how it stores labels and where it keeps its files.

A preset turns the label values a dataset stores into train ids (``0..num_classes-1``, 255 =
ignore) with a 256-entry lookup table, names and colours the classes, and describes the
folder layout from which (root, split) finds the image/label pairs:

- ade20k: ``images/{split}/*.jpg`` + ``annotations/{split}/*.png``, split train is the
  folder ``training`` and val ``validation``; lists ``{split}.txt``, ``list/{split}.txt``
  (semseg's ``list/training.txt``).
- voc: ``JPEGImages/*.jpg`` + ``SegmentationClassAug/*.png`` hold every split, so a list is
  needed: ``{split}.txt``, ``list/{split}.txt`` or ``ImageSets/Segmentation/{split}.txt``;
  split train is ``train_aug`` (the 10,582 images with SBD labels), val is ``val``.
- cityscapes: ``leftImg8bit/{split}/CITY/*_leftImg8bit.png`` +
  ``gtFine/{split}/CITY/*_gtFine_labelIds.png``; lists ``{split}.txt``, ``list/{split}.txt``,
  ``list/fine_{split}.txt``. The labels are labelIds: labelTrainIds files need "custom".
- camvid: ``{split}/*.png`` + ``{split}annot/*.png``; lists ``{split}.txt`` (shipped as
  ``train.txt``, ``val.txt``), ``list/{split}.txt``.
- loveda, potsdam, vaihingen, isaid: as mmsegmentation's converters write them,
  ``img_dir/{split}/*.png`` + ``ann_dir/{split}/*.png`` (isaid's labels end in
  ``_instance_color_RGB.png`` but hold indices); lists ``{split}.txt``, ``list/{split}.txt``.
- coco_stuff10k, coco_stuff164k: as mmseg's converters write them, ``images/{split}/*.jpg`` +
  ``annotations/{split}/*_labelTrainIds.png``; split train is the folder ``train2014``
  (``train2017``), val is ``test2014`` (``val2017``).
- pascal_context, pascal_context_59: in ``VOCdevkit/VOC2010``, ``JPEGImages/*.jpg`` +
  ``SegmentationClassContext/*.png`` (written by mmseg's converter) hold every split; lists
  ``{split}.txt``, ``list/{split}.txt``, ``ImageSets/SegmentationContext/{split}.txt``.
- custom: ``images/{split}/*.{jpg,jpeg,png,bmp,tif,tiff,webp}`` + ``labels/{split}/*.png``;
  lists ``{split}.txt``, ``list/{split}.txt``.

A list file holds one pair per line, ``image label``, paths relative to the root (the format
of hszhao/semseg's lists); a line with a single name is a file stem looked up in the folders.
Without a list, images are paired with labels by their path below the folder, less the suffix.

Stored values a dataset never uses keep an out-of-range train id in the table (e.g. ADE20K's
200 -> 199), so reading such a label fails instead of training on garbage.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pspnet.data.mmseg_classes import (
    COCO_STUFF_CLASSES,
    ISAID_CLASSES,
    ISPRS_CLASSES,
    LOVEDA_CLASSES,
    PASCAL_CONTEXT_NAMES,
)
from pspnet.errors import DatasetError
from pspnet.settings import check_settings, setting

__all__ = ["IGNORE_INDEX", "DatasetPreset", "FolderLayout", "PRESETS", "get_preset", "voc_colormap"]

IGNORE_INDEX = 255

# A 256-entry uint8 table: train id = label_map[stored value].
LUT = np.ndarray

RGB = tuple[int, int, int]

DEFAULT_LISTS = ("{split}.txt", "list/{split}.txt")

# The names file a custom dataset's folder may hold (``pspnet data import`` writes it).
DEFAULT_NAMES_FILE = "classes.txt"


@dataclass(frozen=True)
class FolderLayout:
    """Where a dataset keeps images and labels, below its root.

    Attributes:
        images: image folder; ``{split}`` stands for the split's folder name.
        labels: label folder, same convention.
        image_suffix: file-name ending after the pairing stem (``""``: any image extension).
        label_suffix: the label's ending after the same stem.
        lists: list files tried in order; ``{split}`` is tried as given, then as its folder name.
        split_folders: (split, folder name) pairs where the dataset names a split differently.
    """

    images: str
    labels: str
    image_suffix: str
    label_suffix: str
    lists: tuple[str, ...] = DEFAULT_LISTS
    split_folders: tuple[tuple[str, str], ...] = ()

    def folder_name(self, split: str) -> str:
        return dict(self.split_folders).get(split, split)

    def list_candidates(self, split: str) -> list[str]:
        """List file paths relative to the root, in the order they are tried."""
        names = dict.fromkeys([split, self.folder_name(split)])  # ordered, without duplicates
        return list(dict.fromkeys(p.format(split=n) for p in self.lists for n in names))


CUSTOM_LAYOUT = FolderLayout("images/{split}", "labels/{split}", "", ".png")


@dataclass(frozen=True)
class DatasetPreset:
    """A dataset's classes, colours, label mapping and folder layout.

    Attributes:
        name: the preset's name (``PRESETS`` key).
        num_classes: train ids are ``0..num_classes-1``; 255 is ignored.
        class_names: one name per train id.
        palette: one RGB colour per train id.
        label_map: (256,) read-only uint8 table from stored label value to train id.
        layout: where the images and labels are found.
        colours_from: where the palette comes from when RGB colour labels are read through it
            (a names file, "the camvid preset"); None: colour labels are refused.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    label_map: LUT = field(compare=False, repr=False)
    layout: FolderLayout = CUSTOM_LAYOUT
    colours_from: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes < IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..254, got {self.num_classes}")
        if len(self.class_names) != self.num_classes or len(self.palette) != self.num_classes:
            raise ValueError(
                f"{self.name}: {self.num_classes} classes but {len(self.class_names)} names "
                f"and {len(self.palette)} colours"
            )
        if self.label_map.shape != (256,) or self.label_map.dtype != np.uint8:
            raise ValueError(f"{self.name}: label_map must be a (256,) uint8 table")
        self.label_map.flags.writeable = False

    def with_label_map(self, mapping: dict[int, int] | None) -> DatasetPreset:
        """This preset with ``mapping`` (stored value -> train id) over its own table.

        Raises:
            DatasetError: a stored value outside 0..255, or a train id that is neither a
                class nor 255 (ignore).
        """
        if not mapping:
            return self
        table = self.label_map.copy()
        for stored, train_id in mapping.items():
            if not 0 <= stored <= 255:
                raise DatasetError(f"data.label_map: stored value {stored} is not in 0..255")
            if not (0 <= train_id < self.num_classes or train_id == IGNORE_INDEX):
                raise DatasetError(
                    f"data.label_map: {stored} -> {train_id}, but train ids are classes "
                    f"0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)"
                )
            table[stored] = train_id
        return dataclasses.replace(self, label_map=table)


def lut(mapping: dict[int, int] | None = None) -> LUT:
    """A (256,) table: ``mapping`` where given, elsewhere the value itself."""
    table = np.arange(256, dtype=np.uint8)
    for stored, train_id in (mapping or {}).items():
        table[stored] = train_id
    return table


def reduce_zero_label() -> LUT:
    """mmsegmentation's ``reduce_zero_label``: stored 0 is ignored, 1..254 move down by one."""
    return lut({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, IGNORE_INDEX)}})


def voc_colormap(n: int) -> tuple[RGB, ...]:
    """PASCAL VOC's colour map: the bits of the index interleaved into R, G, B, high bit first.

    Distinct for all 256 indices, so it also colours presets without published colours.
    """
    colours = []
    for index in range(n):
        rgb = [0, 0, 0]
        for shift in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * shift + channel)) & 1) << (7 - shift)
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


# ADE20K SceneParsing (Zhou et al. 2017), objectInfo150 order; short names and the palette
# everyone draws ADE20K with (semseg, mmsegmentation).
ADE20K_NAMES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
ADE20K_PALETTE = (
    (120, 120, 120),
    (180, 120, 120),
    (6, 230, 230),
    (80, 50, 50),
    (4, 200, 3),
    (120, 120, 80),
    (140, 140, 140),
    (204, 5, 255),
    (230, 230, 230),
    (4, 250, 7),
    (224, 5, 255),
    (235, 255, 7),
    (150, 5, 61),
    (120, 120, 70),
    (8, 255, 51),
    (255, 6, 82),
    (143, 255, 140),
    (204, 255, 4),
    (255, 51, 7),
    (204, 70, 3),
    (0, 102, 200),
    (61, 230, 250),
    (255, 6, 51),
    (11, 102, 255),
    (255, 7, 71),
    (255, 9, 224),
    (9, 7, 230),
    (220, 220, 220),
    (255, 9, 92),
    (112, 9, 255),
    (8, 255, 214),
    (7, 255, 224),
    (255, 184, 6),
    (10, 255, 71),
    (255, 41, 10),
    (7, 255, 255),
    (224, 255, 8),
    (102, 8, 255),
    (255, 61, 6),
    (255, 194, 7),
    (255, 122, 8),
    (0, 255, 20),
    (255, 8, 41),
    (255, 5, 153),
    (6, 51, 255),
    (235, 12, 255),
    (160, 150, 20),
    (0, 163, 255),
    (140, 140, 140),
    (250, 10, 15),
    (20, 255, 0),
    (31, 255, 0),
    (255, 31, 0),
    (255, 224, 0),
    (153, 255, 0),
    (0, 0, 255),
    (255, 71, 0),
    (0, 235, 255),
    (0, 173, 255),
    (31, 0, 255),
    (11, 200, 200),
    (255, 82, 0),
    (0, 255, 245),
    (0, 61, 255),
    (0, 255, 112),
    (0, 255, 133),
    (255, 0, 0),
    (255, 163, 0),
    (255, 102, 0),
    (194, 255, 0),
    (0, 143, 255),
    (51, 255, 0),
    (0, 82, 255),
    (0, 255, 41),
    (0, 255, 173),
    (10, 0, 255),
    (173, 255, 0),
    (0, 255, 153),
    (255, 92, 0),
    (255, 0, 255),
    (255, 0, 245),
    (255, 0, 102),
    (255, 173, 0),
    (255, 0, 20),
    (255, 184, 184),
    (0, 31, 255),
    (0, 255, 61),
    (0, 71, 255),
    (255, 0, 204),
    (0, 255, 194),
    (0, 255, 82),
    (0, 10, 255),
    (0, 112, 255),
    (51, 0, 255),
    (0, 194, 255),
    (0, 122, 255),
    (0, 255, 163),
    (255, 153, 0),
    (0, 255, 10),
    (255, 112, 0),
    (143, 255, 0),
    (82, 0, 255),
    (163, 255, 0),
    (255, 235, 0),
    (8, 184, 170),
    (133, 0, 255),
    (0, 255, 92),
    (184, 0, 255),
    (255, 0, 31),
    (0, 184, 255),
    (0, 214, 255),
    (255, 0, 112),
    (92, 255, 0),
    (0, 224, 255),
    (112, 224, 255),
    (70, 184, 160),
    (163, 0, 255),
    (153, 0, 255),
    (71, 255, 0),
    (255, 0, 163),
    (255, 204, 0),
    (255, 0, 143),
    (0, 255, 235),
    (133, 255, 0),
    (255, 0, 235),
    (245, 0, 255),
    (255, 0, 122),
    (255, 245, 0),
    (10, 190, 212),
    (214, 255, 0),
    (0, 204, 255),
    (20, 0, 255),
    (255, 255, 0),
    (0, 153, 255),
    (0, 41, 255),
    (0, 255, 204),
    (41, 0, 255),
    (41, 255, 0),
    (173, 0, 255),
    (0, 245, 255),
    (71, 0, 255),
    (122, 0, 255),
    (0, 255, 184),
    (0, 92, 255),
    (184, 255, 0),
    (0, 133, 255),
    (255, 214, 0),
    (25, 194, 194),
    (102, 255, 0),
    (92, 0, 255),
)

VOC_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# Cityscapes (Cordts et al. 2016): labelIds of the 19 evaluated classes, in train-id order,
# with cityscapesScripts' colours.
CITYSCAPES_CLASSES = (
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)
CITYSCAPES_LABEL_IDS = 34  # labelIds 0..33; 255 is also written (licence plate, id -1)

# SegNet's 11-class CamVid; names and colours from the dataset's README.
CAMVID_CLASSES = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
)
CAMVID_VOID = 11


def ade20k() -> DatasetPreset:
    # Stored 0 is "other objects", not one of the 150 classes (reduce_zero_label in mmseg).
    table = reduce_zero_label()
    layout = FolderLayout(
        "images/{split}",
        "annotations/{split}",
        ".jpg",
        ".png",
        split_folders=(("train", "training"), ("val", "validation")),
    )
    return DatasetPreset("ade20k", 150, ADE20K_NAMES, ADE20K_PALETTE, table, layout)


def voc() -> DatasetPreset:
    layout = FolderLayout(
        "JPEGImages",
        "SegmentationClassAug",
        ".jpg",
        ".png",
        lists=(*DEFAULT_LISTS, "ImageSets/Segmentation/{split}.txt"),
        split_folders=(("train", "train_aug"),),
    )
    return DatasetPreset("voc", 21, VOC_NAMES, voc_colormap(21), lut(), layout)


def cityscapes() -> DatasetPreset:
    table = lut({label_id: IGNORE_INDEX for label_id in range(CITYSCAPES_LABEL_IDS)})
    for train_id, (label_id, _, _) in enumerate(CITYSCAPES_CLASSES):
        table[label_id] = train_id
    layout = FolderLayout(
        "leftImg8bit/{split}",
        "gtFine/{split}",
        "_leftImg8bit.png",
        "_gtFine_labelIds.png",
        lists=(*DEFAULT_LISTS, "list/fine_{split}.txt"),
    )
    names = tuple(name for _, name, _ in CITYSCAPES_CLASSES)
    palette = tuple(colour for _, _, colour in CITYSCAPES_CLASSES)
    colours = "the cityscapes preset's colours"
    return DatasetPreset("cityscapes", 19, names, palette, table, layout, colours)


def camvid() -> DatasetPreset:
    layout = FolderLayout("{split}", "{split}annot", ".png", ".png")
    names = tuple(name for name, _ in CAMVID_CLASSES)
    palette = tuple(colour for _, colour in CAMVID_CLASSES)
    table = lut({CAMVID_VOID: IGNORE_INDEX})
    return DatasetPreset("camvid", 11, names, palette, table, layout, "the camvid preset's colours")


# The datasets of mmsegmentation's published weights (pspnet/weights/registry.yaml), with the
# label conventions of mmseg's dataset configs and the folders its converters
# (tools/dataset_converters/) write.
AERIAL_LAYOUT = FolderLayout("img_dir/{split}", "ann_dir/{split}", ".png", ".png")
PASCAL_CONTEXT_LAYOUT = FolderLayout(
    "JPEGImages",
    "SegmentationClassContext",
    ".jpg",
    ".png",
    lists=(*DEFAULT_LISTS, "ImageSets/SegmentationContext/{split}.txt"),
)


def from_pairs(
    name: str,
    classes: tuple[tuple[str, RGB], ...],
    label_map: LUT,
    layout: FolderLayout,
    colours_from: str | None = None,
) -> DatasetPreset:
    names = tuple(class_name for class_name, _ in classes)
    palette = tuple(colour for _, colour in classes)
    return DatasetPreset(name, len(classes), names, palette, label_map, layout, colours_from)


def loveda() -> DatasetPreset:
    # Stored 0 is no-data, 1..7 the classes (reduce_zero_label in mmseg).
    return from_pairs("loveda", LOVEDA_CLASSES, reduce_zero_label(), AERIAL_LAYOUT)


def isprs(name: str) -> DatasetPreset:
    # mmseg's converter writes 0 where the label is none of the six colours (the black
    # boundaries of the eroded labels) and 1..6 for the classes; reduce_zero_label in mmseg.
    # The publisher's own labels are colour images in these colours.
    colours = f"the {name} preset's colours"
    return from_pairs(name, ISPRS_CLASSES, reduce_zero_label(), AERIAL_LAYOUT, colours)


def isaid() -> DatasetPreset:
    # Stored 0..15 with background a class (mmseg keeps reduce_zero_label off); the converter
    # pads with 255. The publisher's masks are colour images in these colours.
    layout = dataclasses.replace(AERIAL_LAYOUT, label_suffix="_instance_color_RGB.png")
    return from_pairs("isaid", ISAID_CLASSES, lut(), layout, "the isaid preset's colours")


def coco_stuff10k() -> DatasetPreset:
    # The converter writes 0 (unlabelled) and 1..171 (reduce_zero_label in mmseg, which
    # validates on the 1,000 test2014 images).
    layout = FolderLayout(
        "images/{split}",
        "annotations/{split}",
        ".jpg",
        "_labelTrainIds.png",
        split_folders=(("train", "train2014"), ("val", "test2014"), ("test", "test2014")),
    )
    return from_pairs("coco_stuff10k", COCO_STUFF_CLASSES, reduce_zero_label(), layout)


def coco_stuff164k() -> DatasetPreset:
    # The converter writes train ids 0..170 and 255 (unlabelled) already.
    layout = FolderLayout(
        "images/{split}",
        "annotations/{split}",
        ".jpg",
        "_labelTrainIds.png",
        split_folders=(("train", "train2017"), ("val", "val2017")),
    )
    return from_pairs("coco_stuff164k", COCO_STUFF_CLASSES, lut(), layout)


def pascal_context() -> DatasetPreset:
    # Stored 0..59, "background" (0) one of the 60 classes; mmseg draws them in ADE20K's
    # first 60 colours.
    palette = ADE20K_PALETTE[:60]
    return DatasetPreset(
        "pascal_context", 60, PASCAL_CONTEXT_NAMES, palette, lut(), PASCAL_CONTEXT_LAYOUT
    )


def pascal_context_59() -> DatasetPreset:
    # The same labels with background ignored (reduce_zero_label in mmseg).
    names, palette = PASCAL_CONTEXT_NAMES[1:], ADE20K_PALETTE[1:60]
    table = reduce_zero_label()
    return DatasetPreset("pascal_context_59", 59, names, palette, table, PASCAL_CONTEXT_LAYOUT)


PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        ade20k(),
        voc(),
        cityscapes(),
        camvid(),
        loveda(),
        isprs("potsdam"),
        isprs("vaihingen"),
        isaid(),
        coco_stuff10k(),
        coco_stuff164k(),
        pascal_context(),
        pascal_context_59(),
    )
}


def get_preset(
    name: str,
    num_classes: int | None = None,
    names_file: str | Path | None = None,
    label_map: dict[int, int] | None = None,
    root: str | Path | None = None,
) -> DatasetPreset:
    """The preset called ``name``, or a "custom" one built from a class count or names file.

    Args:
        name: a ``PRESETS`` key ("ade20k", "voc", "cityscapes", "camvid", or a dataset of
            mmseg's published weights: "loveda", "potsdam", "vaihingen", "isaid",
            "coco_stuff10k", "coco_stuff164k", "pascal_context", "pascal_context_59") or
            "custom".
        num_classes: for "custom": the class count (taken from ``names_file`` if omitted);
            for the others it may be given but must match.
        names_file: for "custom": one class per line, ``name`` or ``name R G B``, or CVAT's
            ``labelmap.txt`` (``name:R,G,B:parts:actions``); ``#`` starts a comment line.
        label_map: stored value -> train id, over the preset's own mapping.
        root: the dataset folder: a custom dataset with neither a class count nor a names
            file reads ``root/classes.txt`` when it exists (what ``pspnet data import`` writes).
    """
    if name == "custom":
        if names_file is None and num_classes is None and root is not None:
            default = Path(root) / DEFAULT_NAMES_FILE
            names_file = default if default.is_file() else None
        return custom(num_classes, names_file).with_label_map(label_map)
    if name not in PRESETS:
        raise DatasetError(f"unknown dataset preset {name!r}; choose one of {[*PRESETS, 'custom']}")
    preset = PRESETS[name]
    if names_file is not None:
        raise DatasetError(f"{names_file}: a names file only applies to the 'custom' preset")
    if num_classes is not None and num_classes != preset.num_classes:
        raise DatasetError(
            f"preset {name!r} has {preset.num_classes} classes, not {num_classes}; "
            "use the 'custom' preset for another class count"
        )
    return preset.with_label_map(label_map)


def custom(num_classes: int | None, names_file: str | Path | None) -> DatasetPreset:
    """Stored values 0..N-1 are the classes, 255 is ignored; names and colours from a file.

    Colour labels are read through the file's colours when every class has one.
    """
    if names_file is None:
        if num_classes is None:
            raise DatasetError(
                "the 'custom' preset needs num_classes or a names file (data.names_file, "
                f"--names-file, or {DEFAULT_NAMES_FILE} in the dataset folder)"
            )
        names, colours = [f"class_{i}" for i in range(num_classes)], [None] * num_classes
    else:
        names, colours = read_names_file(Path(names_file))
        if num_classes is not None and num_classes != len(names):
            raise DatasetError(
                f"{names_file}: lists {len(names)} classes but num_classes is {num_classes}"
            )
    if not 1 <= len(names) < IGNORE_INDEX:
        source = names_file or "num_classes"
        raise DatasetError(f"{source}: a custom dataset needs 1..254 classes, got {len(names)}")
    fallback = voc_colormap(len(names))
    palette = tuple(c if c is not None else fallback[i] for i, c in enumerate(colours))
    explicit = names_file is not None and all(c is not None for c in colours)
    return DatasetPreset(
        "custom",
        len(names),
        tuple(names),
        palette,
        lut(),
        CUSTOM_LAYOUT,
        str(names_file) if explicit else None,
    )


def read_names_file(path: Path) -> tuple[list[str], list[RGB | None]]:
    """Class names and optional colours, one class per line: ``name [R G B]`` or CVAT's
    ``name:R,G,B:parts:actions``; blank lines and ``#`` comments are skipped.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no part of a name
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the class names file ({err})") from err
    names: list[str] = []
    colours: list[RGB | None] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colour = parse_names_line(line)
        if not name:
            raise DatasetError(f"{path}:{number}: no class name before the colour: {line!r}")
        if colour is not None and not all(0 <= c <= 255 for c in colour):
            raise DatasetError(f"{path}:{number}: colour values must be 0..255: {line!r}")
        if colour is not None and colour in colours:
            other = names[colours.index(colour)]
            raise DatasetError(
                f"{path}:{number}: {name!r} has the colour {colour} of {other!r}; colour "
                "labels need one colour per class"
            )
        if name in names:
            raise DatasetError(f"{path}:{number}: class {name!r} is listed twice")
        names.append(name)
        colours.append(colour)
    if not names:
        raise DatasetError(f"{path}: the class names file is empty; write one class per line")
    return names, colours


# CVAT's labelmap.txt: "name:R,G,B:parts:actions" (parts and actions may be empty).
CVAT_LINE = re.compile(r"^(?P<name>[^:]+):(?P<rgb>[0-9]+,[0-9]+,[0-9]+):[^:]*:[^:]*$")
# A colour value: ASCII digits only (str.isdigit and \d also take "²" or "٣").
COLOUR_VALUE = re.compile(r"-?[0-9]+")


def parse_names_line(line: str) -> tuple[str, RGB | None]:
    """``"traffic light 250 170 30"`` -> ("traffic light", (250, 170, 30)).

    Names may hold spaces; a line ending in three integers gives the class's colour. CVAT's
    ``"traffic light:250,170,30::"`` gives the same.
    """
    cvat = CVAT_LINE.match(line.strip())
    if cvat is not None:
        r, g, b = (int(v) for v in cvat["rgb"].split(","))
        return cvat["name"].strip(), (r, g, b)
    words = line.split()
    if len(words) >= 3 and all(COLOUR_VALUE.fullmatch(w) for w in words[-3:]):
        r, g, b = (int(w) for w in words[-3:])
        return " ".join(words[:-3]), (r, g, b)
    return " ".join(words), None


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``): a class name printed as it is
    could drive the terminal."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def label_map_entry(text: str) -> tuple[int, int]:
    """``VALUE:ID`` with both in 0..255 (``--label-map 255:1``); raises ValueError."""
    stored, _, train_id = text.partition(":")
    try:
        entry = int(stored), int(train_id)
    except ValueError:
        raise ValueError(f"expected VALUE:ID such as 255:1, got {text!r}") from None
    if not all(0 <= v <= 255 for v in entry):
        raise ValueError(f"expected values in 0..255, got {text!r}")
    return entry


@dataclass(frozen=True)
class ClassOptions:
    """A custom dataset's classes, and stored label values remapped.

    Attributes:
        num_classes: class count of a custom dataset.
        names_file: class names (and colours) of a custom dataset: 'name [R G B]' per line
            or CVAT's labelmap.txt; default: ROOT/classes.txt when present.
        label_map: map stored label values to train ids (255 ignores), e.g. 255:1 for 0/255
            masks.
    """

    num_classes: int | None = setting(None, low=1)
    names_file: Path | None = None
    label_map: tuple[tuple[int, int], ...] = setting((), parse=label_map_entry, metavar="VALUE:ID")

    def __post_init__(self) -> None:
        check_settings(self)

    def preset(self, dataset: str, root: str | Path | None = None) -> DatasetPreset:
        """The preset ``dataset`` names with these classes (a custom ``root`` may hold
        classes.txt)."""
        label_map = dict(self.label_map) if self.label_map else None
        return get_preset(dataset, self.num_classes, self.names_file, label_map, root)
