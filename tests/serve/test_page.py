"""The web page of ``pspnet serve`` in a real browser (Debian's Chromium, driven by Playwright).

A tiny PSPNet trained for a few iterations on the synthetic scenes (so several classes show)
is served by a real ``pspnet serve`` process; the page must show what the API answers for the
same image: the legend, the overlay's colours pixel for pixel, the class under the pointer.

Screenshots go to the test's ``tmp_path``; with ``PSPNET_DOCS_SCREENSHOT=1`` the finished page
is also copied to docs/images/serve_page.png (off by default: timings differ on every run, so
the file would change on every ``make test``).
"""

import base64
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port
from PIL import Image

from pspnet.checkpoints import load_checkpoint, save_model
from pspnet.data.synthetic import make_scene, write_synthetic_dataset
from pspnet.demo import DemoSettings, demo_config, names_file
from pspnet.engine.train import train

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "images" / "serve_page.png"
SLOW = 30_000  # ms: the first upload waits for the model's first run on two shared cores

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs Debian's chromium at {CHROMIUM} (`make browser`)"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A width-4 PSPNet after 40 steps on 64-pixel scenes: crude, but it names several classes."""
    root = tmp_path_factory.mktemp("page")
    write_synthetic_dataset(root / "data", num_train=16, num_val=1, size=64, seed=0, height=64)
    names_file(root / "data" / "classes.txt")
    settings = DemoSettings(
        image_width=64,
        image_height=64,
        num_train=16,
        num_val=1,
        iterations=40,
        batch_size=4,
        base_width=4,
        lr=0.05,
    )
    train(demo_config(settings, root / "data", use_ppm=True), root / "run", resume=False)
    trained = load_checkpoint(root / "run" / "last.pt")
    save_model(trained.model, root / "tiny.safetensors", trained.metadata)
    return root / "tiny.safetensors"


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory) -> Iterator[str]:
    """``pspnet serve`` in its own process on a free loopback port; its URL once ready."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable,
        "-m",
        "pspnet",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--backend",
        "eager",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pspnet serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):  # 503 while loading, refused at first
            pass
        time.sleep(0.2)
    pytest.fail(f"pspnet serve was not ready within {seconds:g} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh tab; the test fails on any uncaught script error in it."""
    tab = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    tab.on("pageerror", lambda error: errors.append(error))
    yield tab
    tab.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    image, _ = make_scene(np.random.default_rng(3), size=256, kind="street")
    path = tmp_path_factory.mktemp("scene") / "street.png"
    Image.fromarray(image).save(path)
    return path


def get_json(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def percent(share: float) -> str:
    """The page's share format (app.js ``percent``)."""
    return f"{100 * share:.{2 if share < 0.001 else 1}f} %"


def inside(labels: np.ndarray, class_id: int, margin: int = 3) -> tuple[int, int] | None:
    """A pixel (y, x) of ``class_id`` whose whole (2 margin + 1)^2 neighbourhood is that class.

    The pointer lands on it even if the browser rounds the scaled position by a pixel or two.
    """
    uniform = labels == class_id
    height, width = labels.shape
    padded = np.pad(uniform, margin, constant_values=False)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            uniform = (
                uniform
                & padded[margin + dy : margin + dy + height, margin + dx : margin + dx + width]
            )
    found = np.argwhere(uniform)
    return tuple(found[len(found) // 2]) if len(found) else None


def test_page_shows_what_the_api_answers(server, page, scene, tmp_path):
    from playwright.sync_api import expect

    status, answer = get_json(
        f"{server}/v1/segment?format=json", scene.read_bytes(), {"Content-Type": "image/png"}
    )
    assert status == 200, answer
    _, model = get_json(f"{server}/v1/model")
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["label_png"]))))  # (H, W)
    by_share = sorted(answer["classes"], key=lambda c: (-c["share"], c["id"]))
    assert len(by_share) >= 3, "the trained model should tell several classes apart"
    shots = tmp_path / "screenshots"
    shots.mkdir()

    page.goto(f"{server}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "ready")
    expect(page.locator("#status-text")).to_contain_text(f"{len(model['classes'])} classes")
    expect(page.locator("#empty")).to_be_visible()
    page.screenshot(path=shots / "1-empty.png")

    page.set_input_files("#file", scene)
    expect(page.locator("#result")).to_be_visible(timeout=SLOW)
    legend = page.locator("#legend li")
    expect(legend.locator(".name")).to_have_text([c["name"] for c in by_share])
    expect(legend.locator(".share")).to_have_text([percent(c["share"]) for c in by_share])
    timing = page.locator("#timing dd")
    expect(timing).to_have_text([re.compile(r"^\d+\.\d ms$"), re.compile(r"^\d+ ms$")])

    # The overlay is the label map in the model's palette, pixel for pixel.
    drawn = page.evaluate("document.getElementById('overlay').toDataURL('image/png')")
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(drawn.split(",", 1)[1]))))
    assert overlay.shape == (*labels.shape, 4)
    assert np.array_equal(overlay[..., :3], np.asarray(model["palette"], np.uint8)[labels])
    assert (overlay[..., 3] == 255).all()

    slider = page.locator("#opacity")
    slider.fill("45")
    slider.blur()  # no focus ring in the screenshot
    expect(page.locator("#overlay")).to_have_css("opacity", "0.45")
    expect(page.locator("#opacity-value")).to_have_text("45 %")

    box = page.locator("#stage").bounding_box()
    scale = box["width"] / labels.shape[1], box["height"] / labels.shape[0]
    for entry in reversed(by_share[:3]):  # ends on the largest class, for the screenshot
        y, x = inside(labels, entry["id"])
        page.mouse.move(box["x"] + (x + 0.5) * scale[0], box["y"] + (y + 0.5) * scale[1])
        expect(page.locator("#hover")).to_contain_text(entry["name"])
        expect(page.locator("#legend li.active .name")).to_have_text(entry["name"])
    page.screenshot(path=shots / "2-result.png", full_page=True)
    if os.environ.get("PSPNET_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shots / "2-result.png", DOCS_SCREENSHOT)
    page.mouse.move(box["x"] - 20, box["y"] - 20)
    expect(page.locator("#hover")).to_have_text("Move the pointer over the image.")

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    status, refusal = get_json(
        f"{server}/v1/segment?format=json", notes.read_bytes(), {"Content-Type": "image/png"}
    )
    assert status == 415  # no image format whose size can be checked before decoding
    reason = refusal["error"].removeprefix("the uploaded image: ")  # the page names the file
    page.set_input_files("#file-again", notes)
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=SLOW)
    expect(error).to_have_text(f"Could not segment notes.txt: {reason} · HTTP 415")
    expect(legend.locator(".name")).to_have_text([c["name"] for c in by_share])  # still shown
    page.screenshot(path=shots / "3-error.png", full_page=True)

    page.set_viewport_size({"width": 400, "height": 800})  # a phone: the panel goes below
    stage = page.locator("#stage").bounding_box()
    assert stage["width"] <= 400 and page.locator(".panel").bounding_box()["y"] > stage["y"]
    page.screenshot(path=shots / "4-narrow.png", full_page=True)


def test_page_reports_loading_takes_a_dropped_file_and_reports_an_unreachable_server(
    server, page, scene
):
    from playwright.sync_api import expect

    loading = {"ready": False, "error": None}
    page.route("**/readyz", lambda route: route.fulfill(status=503, json=loading))
    page.goto(f"{server}/")
    expect(page.locator("#status-text")).to_have_text("Model loading…")
    expect(page.locator("#status")).to_have_attribute("data-state", "loading")
    page.unroute("**/readyz")
    expect(page.locator("#status")).to_have_attribute("data-state", "ready", timeout=SLOW)

    drop(page, scene)
    expect(page.locator("#result")).to_be_visible(timeout=SLOW)
    expect(page.locator("#file-name")).to_have_text("street.png · 256 × 256")
    expect(page.locator("#error")).to_be_hidden()

    page.route("**/v1/segment*", lambda route: route.abort())
    drop(page, scene)
    expect(page.locator("#error")).to_contain_text("Could not segment street.png")
    expect(page.locator("#error")).to_contain_text("the server cannot be reached")


def drop(page, path: Path) -> None:
    """Drop ``path`` on the page as a file dragged from the desktop would be."""
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_label_decoder_undoes_every_png_filter_at_every_bit_depth(server, page, depth):
    # The service's label PNGs use 8 bits and no filter; other encoders may use all of them.
    ids = np.random.default_rng(depth).integers(0, 2**depth, (11, 13), dtype=np.uint8)
    page.goto(f"{server}/")
    decoded = page.evaluate(
        """async (data) => {
            const { width, height, ids } = await decodeLabelPng(data);
            return [width, height, Array.from(ids)];
        }""",
        base64.b64encode(encode_png(ids, depth)).decode(),
    )
    assert decoded[:2] == [13, 11]
    assert np.array_equal(np.asarray(decoded[2]).reshape(ids.shape), ids)


def encode_png(ids: np.ndarray, depth: int) -> bytes:
    """A grey PNG of ``ids`` (H, W) at ``depth`` bits; row y uses filter type y % 5 (PNG 1.2, 6)."""
    height, width = ids.shape
    bits = np.unpackbits(ids[..., None], axis=-1)[..., 8 - depth :]  # (H, W, depth), MSB first
    rows = np.packbits(bits.reshape(height, -1), axis=-1).astype(np.int32)  # (H, stride)
    above = np.zeros_like(rows[0])
    lines = []
    for y, row in enumerate(rows):
        left = np.concatenate([[0], row[:-1]])  # one byte per pixel at most: bpp is 1
        above_left = np.concatenate([[0], above[:-1]])
        guess = left + above - above_left
        to_a, to_b, to_c = abs(guess - left), abs(guess - above), abs(guess - above_left)
        nearer_b = np.where(to_b <= to_c, above, above_left)
        paeth = np.where((to_a <= to_b) & (to_a <= to_c), left, nearer_b)
        predictor = [0, left, above, (left + above) // 2, paeth][y % 5]
        lines.append(bytes([y % 5]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
        above = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(lines)))
        + chunk(b"IEND", b"")
    )
