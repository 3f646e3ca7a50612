"""Extracting archives: only the chosen folders, moved; every escaping member refused."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pspnet.data.archives import extract
from pspnet.errors import DatasetError

FOLDERS = (("root/sub/images", "images"), ("root/sub/labels", "labels"))


def tar_file(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w") -> Path:
    """A tar of ``members``: (name, data) files, or TarInfo entries (links, devices) as given."""
    with tarfile.open(path, mode) as tarred:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tarred.addfile(member)
                continue
            info = tarfile.TarInfo(member[0])
            info.size = len(member[1])
            tarred.addfile(info, io.BytesIO(member[1]))
    return path


def zip_file(path: Path, members: list[tuple[str, bytes]], links: dict[str, str] = {}) -> Path:  # noqa: B006
    """A zip of (name, data) files and {name: target} symbolic links, as Info-ZIP stores them."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members:
            zipped.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zipped.writestr(info, target)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


FILES = [
    ("root/sub/images/a.jpg", b"image"),
    ("root/sub/labels/a.png", b"label"),
    ("root/sub/README", b"left out"),
    ("root/other/b.jpg", b"left out"),
]


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_only_the_chosen_folders_are_extracted_where_they_belong(tmp_path, kind):
    if kind == "zip":
        archive = zip_file(tmp_path / "a.zip", FILES)
    else:
        archive = tar_file(tmp_path / f"a.{kind}", FILES, "w:gz" if kind == "tar.gz" else "w")
    extract(archive, tmp_path / "out", FOLDERS)
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert found == ["images", "images/a.jpg", "labels", "labels/a.png"]
    assert (tmp_path / "out" / "labels" / "a.png").read_bytes() == b"label"


UNSAFE_TAR = {
    "dot-dot": ("root/sub/images/../../../../evil", b"x"),
    "absolute": ("/tmp/pspnet-archives-evil", b"x"),
    "link-outside": link("root/sub/images/l.jpg", "../../../../etc/passwd"),
    "absolute-link": link("root/sub/images/l.jpg", "/etc/passwd"),
    "hard-link-outside": link("root/sub/images/h.jpg", "../../../etc/passwd", tarfile.LNKTYPE),
    "device": link("root/sub/images/dev", "", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("case", list(UNSAFE_TAR))
def test_an_unsafe_tar_member_refuses_the_archive_before_anything_is_written(tmp_path, case):
    member = UNSAFE_TAR[case]
    archive = tar_file(tmp_path / "a.tar", [*FILES, member])
    with pytest.raises(DatasetError, match="the archive is refused") as error:
        extract(archive, tmp_path / "out", FOLDERS)
    name = member.name if isinstance(member, tarfile.TarInfo) else member[0]
    assert str(archive) in str(error.value) and repr(name) in str(error.value)
    assert not (tmp_path / "out").exists()  # checked first: not even the safe members
    assert not Path("/tmp/pspnet-archives-evil").exists()


@pytest.mark.parametrize(
    ("members", "links"),
    [
        ([("root/sub/images/../../../../evil", b"x")], {}),
        ([("/tmp/pspnet-archives-evil", b"x")], {}),
        ([], {"root/sub/images/l.jpg": "../../../../etc/passwd"}),
        ([], {"root/sub/images/l.jpg": "/etc/passwd"}),
    ],
    ids=["dot-dot", "absolute", "link-outside", "absolute-link"],
)
def test_an_unsafe_zip_member_refuses_the_archive_before_anything_is_written(
    tmp_path, members, links
):
    archive = zip_file(tmp_path / "a.zip", [*FILES, *members], links)
    with pytest.raises(DatasetError, match="the archive is refused"):
        extract(archive, tmp_path / "out", FOLDERS)
    assert not (tmp_path / "out").exists() and not Path("/tmp/pspnet-archives-evil").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_link_to_a_file_beside_it_is_kept(tmp_path, kind):
    target = {"root/sub/images/b.jpg": "a.jpg"}
    if kind == "zip":
        archive = zip_file(tmp_path / "a.zip", FILES, target)
    else:
        archive = tar_file(tmp_path / "a.tar", [*FILES, link("root/sub/images/b.jpg", "a.jpg")])
    extract(archive, tmp_path / "out", FOLDERS)
    assert (tmp_path / "out" / "images" / "b.jpg").read_bytes() == b"image"


def test_a_link_that_the_move_would_take_outside_is_refused(tmp_path):
    """root/sub/images/l -> ../../x stays inside the archive, but not once images/ is moved up."""
    archive = tar_file(tmp_path / "a.tar", [("root/x", b"x"), link("root/sub/images/l", "../../x")])
    with pytest.raises(DatasetError, match="'root/sub/images/l'"):
        extract(archive, tmp_path / "out", FOLDERS)
    assert not (tmp_path / "x").exists()


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(DatasetError, match="neither a zip nor a tar archive; delete it"):
        extract(tmp_path / "a.zip", tmp_path / "out", FOLDERS)
