"""``pspnet serve`` as a client sees it: real uvicorn processes on 127.0.0.1, stdlib clients.

Three servers of a tiny checkpoint start together once for the module:

- ``main``: a long queue (16) and a 2 MiB upload limit: formats, errors, concurrency, health;
- ``busy``: ``--max-queue 1``: overload, a client leaving while queued, a flood of uploads;
- ``strict``: ``--timeout 0.05`` and a 1-megapixel limit: 504 and 413 on pixels.
"""

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image
from service_helpers import (
    CLASS_NAMES,
    INFERENCE,
    PALETTE,
    call,
    decode_png,
    encode,
    memory_kib,
    metric,
    multipart,
    noise,
    pixel_bomb,
    raw_request,
    read_status,
    scene,
    segment,
    start_service,
    wait_for,
    wait_ready,
    write_tiny_checkpoint,
)

from pspnet.inference import Segmenter
from pspnet.visualize import overlay

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

FORMATS = ("png", "json", "masks", "overlay")
SEGMENTED = "pspnet_images_segmented_total"
DROPPED = "pspnet_requests_dropped_total"
REQUESTS = "pspnet_requests_total"
# Sides of an image whose inference is slow enough to overlap (~1 s or more on 2 cores).
SLOW_SIDE = 2000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


@pytest.fixture(scope="module")
def services(checkpoint):
    """The three servers, started at once (each pays ~3 s of imports) and stopped at the end."""
    options = {
        "main": ("--max-queue", "16", "--max-upload-mb", "2"),
        "busy": ("--max-queue", "1", "--max-upload-mb", "8"),
        "strict": ("--timeout", "0.05", "--max-upload-mb", "1", "--max-pixels", "1000000"),
    }
    folder = checkpoint.parent
    started = {}
    try:
        for name, flags in options.items():
            started[name] = start_service(checkpoint, folder / f"{name}.log", *flags)
        for service in started.values():
            wait_ready(service)
        yield started
    finally:
        for service in started.values():
            service.stop()


@pytest.fixture(scope="module")
def main(services):
    return services["main"]


@pytest.fixture(scope="module")
def busy(services):
    return services["busy"]


@pytest.fixture(scope="module")
def strict(services):
    return services["strict"]


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    """The library's own call on the same checkpoint: what every response must agree with."""
    return Segmenter.from_checkpoint(checkpoint)


def assert_alive(service) -> None:
    assert service.alive, service.log.read_text()[-3000:]
    reply = call(service.port, "GET", "/healthz", timeout=10)
    assert (reply.status, reply.json()) == (200, {"alive": True})


def assert_problem(reply, status: int) -> None:
    """An error response: the status, JSON ``{"error": <text>, "status": <status>}``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert isinstance(body["error"], str) and body["error"]


def labels_of(reply) -> np.ndarray:
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.headers["content-type"] == "image/png"
    return decode_png(reply.body)


def check_png(reply, image, expected, segmenter):
    labels = labels_of(reply)
    np.testing.assert_array_equal(labels, expected)
    with Image.open(io.BytesIO(reply.body)) as picture:
        assert picture.mode == "P"
        assert picture.getpalette()[: 3 * len(PALETTE)] == [c for rgb in PALETTE for c in rgb]
    shares = json.loads(reply.headers["x-class-shares"])
    assert sum(shares.values()) == pytest.approx(1, abs=1e-4)
    ids, counts = np.unique(expected, return_counts=True)
    assert shares == pytest.approx(
        {CLASS_NAMES[i]: n / expected.size for i, n in zip(ids, counts)}, abs=1e-6
    )


def check_json(reply, image, expected, segmenter):
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"width", "height", "classes", "unknown_share", "label_png", "inference_ms"}
    assert body["unknown_share"] == 0
    assert (body["height"], body["width"]) == expected.shape
    ids, counts = np.unique(expected, return_counts=True)
    assert [c["id"] for c in body["classes"]] == ids.tolist()
    for entry, count in zip(body["classes"], counts):
        assert entry["name"] == CLASS_NAMES[entry["id"]]
        assert entry["color"] == list(PALETTE[entry["id"]])
        assert entry["share"] == pytest.approx(count / expected.size, abs=1e-9)
        assert 0 < entry["confidence"] <= 1
    np.testing.assert_array_equal(decode_png(base64.b64decode(body["label_png"])), expected)
    assert isinstance(body["inference_ms"], (int, float)) and body["inference_ms"] >= 0


def check_masks(reply, image, expected, segmenter):
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    entries = reply.json()
    assert [e["label"] for e in entries] == [CLASS_NAMES[i] for i in np.unique(expected)]
    covered = np.zeros(expected.shape, np.int64)
    for entry in entries:
        assert set(entry) == {"label", "mask", "score"}
        mask = decode_png(base64.b64decode(entry["mask"]))
        assert mask.shape == expected.shape and set(np.unique(mask)) <= {0, 255}
        inside = mask == 255
        np.testing.assert_array_equal(inside, expected == CLASS_NAMES.index(entry["label"]))
        assert 0 < entry["score"] <= 1
        covered += inside
    np.testing.assert_array_equal(covered, 1)  # every pixel in exactly one mask


def check_overlay(reply, image, expected, segmenter):
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(reply.body)) as picture:
        assert picture.format == "PNG"
        assert picture.width >= image.shape[1] and picture.height >= image.shape[0]
        drawn = np.asarray(picture.convert("RGB"))
    local = overlay(image, expected, segmenter.palette, class_names=segmenter.class_names)
    np.testing.assert_array_equal(drawn, np.asarray(local))


CHECKS = {"png": check_png, "json": check_json, "masks": check_masks, "overlay": check_overlay}


def test_ready_model_and_health(main):
    assert main.readyz[-1] == 200 and set(main.readyz) <= {200, 503}
    assert call(main.port, "GET", "/readyz").json() == {"ready": True}
    assert_alive(main)
    described = call(main.port, "GET", "/v1/model").json()
    assert described["classes"] == CLASS_NAMES
    assert described["palette"] == [list(c) for c in PALETTE]
    assert described["architecture"]["num_classes"] == len(CLASS_NAMES)
    assert {k: described["inference"][k] for k in INFERENCE} == INFERENCE


@pytest.mark.parametrize("as_form", [False, True], ids=["raw", "multipart"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_the_library(main, segmenter, fmt, as_form):
    image = scene(48, 64, seed=1)
    expected = segmenter(image)
    assert len(np.unique(expected)) >= 2  # so masks, shares and classes have something to split
    reply = segment(main.port, encode(image), fmt, as_form=as_form)
    CHECKS[fmt](reply, image, expected, segmenter)


def grey():
    image = scene(48, 64, seed=2)[..., 0]
    return encode(image), np.repeat(image[..., None], 3, axis=2)


def rgba():
    image = scene(48, 64, seed=3)
    alpha = np.full((48, 64, 1), 128, np.uint8)
    return encode(np.concatenate([image, alpha], axis=2)), image  # alpha dropped, not blended


def sixteen_bit():
    image = scene(48, 64, seed=4)
    ok, data = cv2.imencode(".png", (image[..., ::-1].astype(np.uint16) << 8) + 100)  # BGR
    assert ok
    return data.tobytes(), image  # the high byte


def exif_rotated_jpeg():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show it upright
    return encode(scene(48, 64, seed=5), "JPEG", quality=95, exif=exif.tobytes()), None


@pytest.mark.parametrize(
    ("make", "upright"),
    [(grey, (48, 64)), (rgba, (48, 64)), (sixteen_bit, (48, 64)), (exif_rotated_jpeg, (64, 48))],
    ids=["grey", "rgba", "16-bit", "exif-jpeg"],
)
def test_image_kinds_match_the_library(main, segmenter, tmp_path, make, upright):
    data, pixels = make()  # pixels: the RGB the upload stands for (None: lossy)
    path = tmp_path / "upload"
    path.write_bytes(data)
    expected = segmenter(path)  # a path is decoded upright, as an upload is
    assert expected.shape == upright
    if pixels is not None:
        np.testing.assert_array_equal(segmenter(pixels), expected)
    kind = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"
    labels = labels_of(segment(main.port, data, content_type=kind))
    np.testing.assert_array_equal(labels, expected)
    assert labels.max() < len(CLASS_NAMES)


SMALL_PNG = encode(scene(64, 64, seed=6))
# Radiance HDR: OpenCV decodes it, Pillow cannot read its size first, so it is refused unread.
HDR = cv2.imencode(".hdr", np.ones((64, 64, 3), np.float32))[1].tobytes()
BAD_REQUESTS = [
    pytest.param(b"definitely not an image " * 20, "image/png", "png", 415, id="garbage"),
    pytest.param(HDR, "image/vnd.radiance", "png", 415, id="radiance-hdr"),
    pytest.param(SMALL_PNG[: len(SMALL_PNG) // 2], "image/png", "png", 400, id="truncated-png"),
    pytest.param(pixel_bomb(100_000, 100_000), "image/png", "png", 413, id="pixel-bomb"),
    pytest.param(SMALL_PNG, "text/plain", "png", 415, id="text-content-type"),
    pytest.param(SMALL_PNG, None, "png", 415, id="no-content-type"),
    pytest.param(SMALL_PNG, "image/png", "bmp", 400, id="unknown-format"),
    pytest.param(b"", "image/png", "png", 400, id="empty-body"),
    pytest.param(
        *multipart(SMALL_PNG, "a.png", "image/png", field="file"), "png", 400, id="form-no-image"
    ),
]


@pytest.mark.parametrize(("body", "content_type", "fmt", "status"), BAD_REQUESTS)
def test_bad_requests_get_json_errors(main, body, content_type, fmt, status):
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = call(main.port, "POST", f"/v1/segment?format={fmt}", body, headers)
    assert_problem(reply, status)
    assert_alive(main)


def test_declared_body_over_the_limit_is_refused_unread(main):
    declared = 3 * 2**20  # main's limit is 2 MiB
    headers = {"Content-Type": "image/png", "Content-Length": str(declared)}
    with raw_request(main.port, "POST", "/v1/segment", headers, SMALL_PNG[:1000]) as sock:
        status, received = read_status(sock, within=10)  # 1000 of 3 MiB sent
    assert status == 413, received
    assert_alive(main)


def test_chunked_body_over_the_limit_is_refused(main):
    headers = {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}
    piece = b"%x\r\n%s\r\n" % (2**16, b"\0" * 2**16)
    with raw_request(main.port, "POST", "/v1/segment", headers, b"") as sock:
        try:
            for _ in range(48):  # 3 MiB, no Content-Length: counted as it streams in
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        status, received = read_status(sock, within=10)
    assert status == 413, received
    assert_alive(main)


def test_pixels_over_the_limit_get_413(strict):
    reply = segment(strict.port, encode(scene(1000, 1001)))  # strict allows 1,000,000 pixels
    assert_problem(reply, 413)
    assert_alive(strict)


def test_slow_image_gets_504_after_the_timeout(strict):
    reply = segment(strict.port, encode(scene(700, 700)))  # ~0.2 s against --timeout 0.05
    assert_problem(reply, 504)
    assert reply.seconds < 5
    assert_alive(strict)


def test_concurrent_requests_all_answered_correctly(main, segmenter):
    images = [scene(48, 64, seed=10 + i) for i in range(8)]  # one size: one warm-up
    expected = [segmenter(image) for image in images]
    start = threading.Barrier(8, timeout=30)

    def client(i):
        start.wait()
        return [labels_of(segment(main.port, encode(images[i]))) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(client, range(8), timeout=120))
    for labels, truth in zip(answers, expected):
        for one in labels:
            np.testing.assert_array_equal(one, truth)


def fire(port: int, data: bytes, count: int, timeout: float = 120) -> list:
    """``count`` uploads of ``data`` released at once: each Reply, or the exception's name."""
    start = threading.Barrier(count, timeout=30)

    def client(_):
        start.wait()
        try:
            return segment(port, data, timeout=60)
        except OSError as err:
            return type(err).__name__

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(client, range(count), timeout=timeout))


def status_of(reply) -> int | str:
    return reply if isinstance(reply, str) else reply.status


def test_overload_gets_503_and_metrics_agree(busy, segmenter):
    image = scene(1000, 1000, seed=7)
    expected = segmenter(image)
    before = {s: metric(busy.port, REQUESTS, route="/v1/segment", status=s) for s in ("200", "503")}
    segmented = metric(busy.port, SEGMENTED)

    replies = fire(busy.port, encode(image), 20)
    statuses = [status_of(r) for r in replies]
    assert set(statuses) == {200, 503}, statuses
    for reply in replies:
        if reply.status == 503:
            assert_problem(reply, 503)
            assert int(reply.headers["retry-after"]) >= 1
        else:
            np.testing.assert_array_equal(labels_of(reply), expected)

    seen = {s: statuses.count(int(s)) for s in ("200", "503")}
    after = {s: metric(busy.port, REQUESTS, route="/v1/segment", status=s) for s in ("200", "503")}
    assert {s: after[s] - before[s] for s in seen} == seen
    assert metric(busy.port, SEGMENTED) - segmented == seen["200"]
    assert metric(busy.port, "pspnet_queue_depth") == 0
    assert metric(busy.port, "pspnet_in_flight") == 0
    assert_alive(busy)


def slow_request(port: int):
    """Start segmenting a SLOW_SIDE-square image in a thread; (thread, replies) to join."""
    replies = []
    data = encode(scene(SLOW_SIDE, SLOW_SIDE, seed=8))
    thread = threading.Thread(target=lambda: replies.append(segment(port, data)), daemon=True)
    thread.start()
    assert wait_for(lambda: metric(port, "pspnet_in_flight") == 1, within=30), "never started"
    return thread, replies


def idle(service) -> bool:
    return (
        metric(service.port, "pspnet_queue_depth") == 0
        and metric(service.port, "pspnet_in_flight") == 0
    )


def test_client_leaving_while_queued_is_dropped_unrun(busy):
    segmented, dropped = metric(busy.port, SEGMENTED), metric(busy.port, DROPPED)
    thread, replies = slow_request(busy.port)
    try:
        headers = {"Content-Type": "image/png", "Content-Length": str(len(SMALL_PNG))}
        with raw_request(busy.port, "POST", "/v1/segment", headers, SMALL_PNG):
            queued = wait_for(lambda: metric(busy.port, "pspnet_queue_depth") == 1, within=10)
        # The socket is closed; the server polls every 0.05 s and cancels the queued work.
        noticed = wait_for(lambda: metric(busy.port, DROPPED) == dropped + 1, within=3)
        during_the_slow_one = metric(busy.port, "pspnet_in_flight") == 1
    finally:
        thread.join(timeout=120)
        assert wait_for(lambda: idle(busy), within=30)  # leave busy idle for the next test
    assert queued, "the second request never queued"
    assert replies and replies[0].status == 200
    assert noticed, "pspnet_requests_dropped_total did not count the client that left"
    assert during_the_slow_one, "the slow request ended too soon; use a larger SLOW_SIDE"
    assert metric(busy.port, SEGMENTED) == segmented + 1  # the slow one only
    assert_alive(busy)


def test_memory_stays_bounded_under_a_flood_of_large_uploads(busy):
    data = encode(noise(1290, 1290, seed=9), compress_level=0)
    assert 4.5e6 < len(data) < 8 * 2**20  # ~5 MB, under busy's 8 MiB limit
    assert wait_for(lambda: idle(busy), within=30)
    assert segment(busy.port, data).status == 200  # the working set of one inference
    pid = busy.process.pid
    resident, peak = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmHWM")

    replies = fire(busy.port, data, 40)  # 200 MB at once against a queue of one
    statuses = [status_of(r) for r in replies]
    grown_mib = (memory_kib(pid, "VmRSS") - resident) / 1024
    peak_grown_mib = (memory_kib(pid, "VmHWM") - peak) / 1024
    assert set(statuses) == {200, 503}, statuses
    assert grown_mib < 300, f"{grown_mib:.0f} MiB more resident after the flood"
    # Holding every upload at once would take 200 MB (and their decoded pixels as much again).
    assert peak_grown_mib < 150, f"peak resident memory grew {peak_grown_mib:.0f} MiB"
    assert_alive(busy)


def test_health_metrics_and_page_answer_during_inference(main):
    thread, replies = slow_request(main.port)
    answered = {
        path: call(main.port, "GET", path, timeout=10)
        for path in ("/healthz", "/metrics", "/readyz", "/")
    }
    still_running = metric(main.port, "pspnet_in_flight") == 1
    thread.join(timeout=120)
    assert not thread.is_alive() and replies[0].status == 200
    assert still_running, "the inference ended before the checks; use a larger SLOW_SIDE"
    assert all(reply.status == 200 for reply in answered.values())
    assert answered["/"].headers["content-type"].startswith("text/html")
    slowest = max(reply.seconds for reply in answered.values())
    assert slowest < 0.5 and slowest < replies[0].seconds / 4, (slowest, replies[0].seconds)


def test_health_answers_while_an_overlay_is_drawn(busy):
    data = encode(noise(1800, 1800, seed=11), "JPEG", quality=90)  # costly to blend and encode
    assert len(data) < 8 * 2**20
    assert wait_for(lambda: idle(busy), within=30)
    replies, latencies = [], []
    thread = threading.Thread(
        target=lambda: replies.append(segment(busy.port, data, "overlay")), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline:
        latencies.append(call(busy.port, "GET", "/healthz", timeout=30).seconds)
        time.sleep(0.02)
    thread.join(timeout=120)
    assert replies and replies[0].status == 200
    assert len(latencies) >= 5
    slowest = max(latencies)
    assert slowest < 0.3, f"/healthz took {slowest:.2f} s during an overlay request"


def test_predict_serve_ray_and_eval_agree_on_one_image(main, segmenter, checkpoint, tmp_path):
    """Every adapter over the inference package gives the same labels, shares and confidence."""
    from pspnet.batch.ray_data import SegmentImages
    from pspnet.data.datasets import SegmentationDataset
    from pspnet.data.presets import get_preset
    from pspnet.engine.evaluate import evaluate
    from pspnet.predict.images import predict_images
    from pspnet.visualize import format_shares

    image = scene(48, 64, seed=7)
    values = np.unique(segmenter.segment(image).confidence)  # a cut some pixels fall under
    cut = round(float(values[len(values) // 2]), 6)
    reference = segmenter.segment(image, unknown_below=cut)
    assert len(reference.present()) >= 2 and 0 < reference.unknown_share() < 1
    # serve: the json format's classes and label PNG
    body = segment(main.port, encode(image), "json", query=f"unknown_below={cut}").json()
    assert [c["id"] for c in body["classes"]] == reference.present()
    for got, want in zip(body["classes"], reference.classes(), strict=True):
        assert got["share"] == pytest.approx(want["share"])
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-6)
    assert body["unknown_share"] == pytest.approx(reference.unknown_share())
    np.testing.assert_array_equal(decode_png(base64.b64decode(body["label_png"])), reference.labels)
    # predict: the label and confidence PNGs, the shares line
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "x.png")
    (result,) = predict_images(
        segmenter, [tmp_path / "in" / "x.png"], tmp_path / "out", confidence=True, unknown_below=cut
    )
    np.testing.assert_array_equal(
        decode_png((tmp_path / "out" / "x_label.png").read_bytes()), reference.labels
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out" / "x_confidence.png")),
        reference.confidence_png_values(),
    )
    assert result.shares == format_shares(list(reference.shares().items()))
    # Ray Data's actor, called as map_batches calls it
    rows = SegmentImages(str(checkpoint), unknown_below=cut)({"image": [image], "path": ["x"]})
    assert json.loads(rows["shares"][0]) == pytest.approx(reference.shares())
    confidence = {CLASS_NAMES[c]: v for c, v in reference.mean_confidence().items()}
    assert json.loads(rows["confidence"][0]) == pytest.approx(confidence)
    # eval: scored against the library's own labels, every decided pixel is right and the
    # unknown ones are left out, as the coverage says
    root = tmp_path / "data"
    for folder, array in (("images/val", image), ("labels/val", segmenter(image))):
        (root / folder).mkdir(parents=True)
        Image.fromarray(array.astype(np.uint8)).save(root / folder / "x.png")
    dataset = SegmentationDataset(root, "val", get_preset("custom", len(CLASS_NAMES)))
    metrics = evaluate(segmenter.network, dataset, segmenter.inference, unknown_below=cut)
    scores = metrics.compute()
    assert scores.pixel_acc == 1.0
    assert scores.coverage == pytest.approx(1 - reference.unknown_share())
