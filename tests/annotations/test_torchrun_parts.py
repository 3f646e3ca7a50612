"""torchrun: each rank writes a part, rank 0 merges them into what one writer would write."""

import json

import pytest
from annotation_maps import NAMES, PALETTE
from test_formats import FORMATS, collection, export, order

from pspnet.annotations import annotation_writer, merge_parts, part_path
from pspnet.errors import OutputError


def write_parts(fmt, out, predictions, ranks=2, **options):
    """Each rank's writer gets every ranks-th prediction, as torchrun's shards do."""
    parts = []
    for rank in range(ranks):
        writer = annotation_writer(fmt, out, NAMES, PALETTE, rank=rank, **options)
        for prediction in predictions[rank::ranks]:
            writer.add(prediction)
        parts += writer.finish()
    return parts


@pytest.mark.parametrize("shapes", ["masks", "polygons"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_merged_parts_are_what_one_writer_writes(fmt, shapes, tmp_path):
    predictions = collection(tmp_path / "images")
    alone = export(fmt, tmp_path / "alone", predictions, shapes=shapes)
    parts = write_parts(fmt, tmp_path / "ranks", predictions, shapes=shapes)
    assert parts == [part_path(fmt, tmp_path / "ranks", rank) for rank in (0, 1)]
    merged = merge_parts(fmt, tmp_path / "ranks", parts)
    assert [p.relative_to(tmp_path / "ranks") for p in merged] == [
        p.relative_to(tmp_path / "alone") for p in alone
    ]
    for one, other in zip(alone, merged, strict=True):
        assert one.read_bytes() == other.read_bytes(), other
    assert not any(path.exists() for path in parts)


def test_the_least_confident_image_comes_first_across_ranks(tmp_path):
    predictions = collection(tmp_path / "images")  # a/dup.png 0.8, b/dup.png 0.6, c.png 0.7
    parts = write_parts("cvat", tmp_path, predictions)  # rank 0: a/dup, c; rank 1: b/dup
    merge_parts("cvat", tmp_path, parts)
    assert order("cvat", tmp_path, []) == ["b/dup.png", "c.png", "a/dup.png"]


def test_part_names_say_the_file_and_the_rank(tmp_path):
    assert part_path("cvat", tmp_path, 1).name == "annotations.rank1.part.json"
    assert part_path("coco", tmp_path, 0).name == "instances.rank0.part.json"
    assert part_path("labelme", tmp_path, 3).name == "labelme.rank3.part.json"
    assert part_path("labelstudio", tmp_path, 2).name == "labelstudio.rank2.part.json"


def test_a_part_keeps_the_encoded_shapes_and_the_scores(tmp_path):
    predictions = collection(tmp_path / "images")
    (part,) = write_parts("coco", tmp_path, predictions, ranks=1)
    data = json.loads(part.read_text())
    assert (data["format"], data["shapes"], data["class_names"]) == ("coco", "masks", NAMES)
    assert [entry["name"] for entry in data["entries"]] == ["a/dup.png", "b/dup.png", "c.png"]
    assert all(isinstance(s["mask"], str) for e in data["entries"] for s in e["shapes"])


def test_a_missing_part_is_named(tmp_path):
    parts = write_parts("coco", tmp_path, collection(tmp_path / "images"))
    parts[1].unlink()
    with pytest.raises(OutputError, match="instances.rank1.part.json: part missing"):
        merge_parts("coco", tmp_path, parts)
    assert not (tmp_path / "instances.json").exists()


def test_parts_of_other_jobs_are_refused(tmp_path):
    predictions = collection(tmp_path / "images")
    (masks,) = write_parts("cvat", tmp_path / "a", predictions, ranks=1)
    (polygons,) = write_parts("cvat", tmp_path / "b", predictions, ranks=1, shapes="polygons")
    with pytest.raises(OutputError, match="merge parts of one job only"):
        merge_parts("cvat", tmp_path, [masks, polygons])
    with pytest.raises(OutputError, match="merge parts of one job only"):
        merge_parts("coco", tmp_path, [masks])
    assert masks.exists() and polygons.exists()


def test_an_image_in_two_parts_is_refused(tmp_path):
    predictions = collection(tmp_path / "images")
    parts = []
    for rank in range(2):
        writer = annotation_writer("labelstudio", tmp_path, NAMES, PALETTE, rank=rank)
        writer.add(predictions[0])
        parts += writer.finish()
    with pytest.raises(OutputError, match="'a/dup.png' was added twice"):
        merge_parts("labelstudio", tmp_path, parts)
