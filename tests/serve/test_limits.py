"""``pspnet serve`` against misuse: deadlines, slow and vanishing clients, foreign Hosts, keys,
load errors, image sizes never seen before and Ctrl+C. Real processes on 127.0.0.1.

Servers, started together once for the module (a tiny checkpoint unless said):

- ``sliding``: sliding windows of 128, ``--timeout 3``, ``--max-queue 1`` (two slots),
  ``--upload-timeout 2``, and a decoders' limit of 2 megapixels (``PSPNET_MAX_IMAGE_PIXELS``)
  under ``--max-pixels 4000000``;
- ``slow``: a resnet18 of full width on one thread, sliding windows of 128 with flipping and
  ``--timeout 3``: a 1400 x 1400 image is 578 forward passes of 10 GFLOP (~30 s on one core
  of a 2-core Intel Xeon; a core of any CPU takes far over 3 s), each under 0.1 s, so a
  request is stopped at its deadline or when its client leaves, on any machine;
- ``keyed``: the default backend, ``--api-key`` and ``--allowed-hosts``;
- ``broken``: a checkpoint file that does not load.
"""

import select
import signal
import socket
import threading
import time

import pytest
from service_helpers import (
    call,
    encode,
    metric,
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

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TIMEOUT, UPLOAD_TIMEOUT = 3.0, 2.0
DECODERS_LIMIT, MAX_PIXELS = 2_000_000, 4_000_000
SLIDING = (
    "--mode",
    "slide",
    "--crop",
    "128",
    "128",
    "--no-flip",
    "--timeout",
    str(TIMEOUT),
    "--max-queue",
    "1",
    "--max-uploads",
    "3",
    "--upload-timeout",
    str(UPLOAD_TIMEOUT),
    "--max-pixels",
    str(MAX_PIXELS),
)
KEY = "correct horse battery staple"
PROXY_NAME = "seg.example.com"
STOPPED = "pspnet_requests_stopped_total"
REQUESTS = "pspnet_requests_total"
SLOW_WINDOWS = ("--mode", "slide", "--crop", "128", "128", "--flip")
SLOW = (*SLOW_WINDOWS, "--timeout", str(TIMEOUT), "--max-queue", "1")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the work must not shrink with the number of cores
# Slow enough on the slow service to be stopped long before it ends; a few MB as PNG.
LONG = encode(scene(1400, 1400, seed=20))
SHORT = encode(scene(64, 64, seed=21))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("limits") / "tiny.safetensors")


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    return write_tiny_checkpoint(folder / "wide.safetensors", base_width=64)


@pytest.fixture(scope="module")
def services(checkpoint, wide_checkpoint):
    folder = checkpoint.parent
    broken = folder / "private" / "broken.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint" * 64)
    started = {}
    try:
        started["sliding"] = start_service(
            checkpoint,
            folder / "sliding.log",
            *SLIDING,
            env={"PSPNET_MAX_IMAGE_PIXELS": str(DECODERS_LIMIT)},
        )
        started["keyed"] = start_service(
            checkpoint,
            folder / "keyed.log",
            "--api-key",
            KEY,
            "--allowed-hosts",
            PROXY_NAME,
            backend=None,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        started["broken"] = start_service(broken, folder / "broken.log")
        started["slow"] = start_service(wide_checkpoint, folder / "slow.log", *SLOW, env=ONE_THREAD)
        wait_ready(started["sliding"])
        wait_ready(started["slow"])
        wait_ready(started["keyed"], within=300)  # a compiled path would take minutes
        yield started
    finally:
        for service in started.values():
            service.stop()


@pytest.fixture(scope="module")
def sliding(services):
    return services["sliding"]


@pytest.fixture(scope="module")
def keyed(services):
    return services["keyed"]


@pytest.fixture(scope="module")
def slow(services):
    return services["slow"]


@pytest.fixture(scope="module")
def broken(services):
    return services["broken"]


def idle(service) -> bool:
    return (
        metric(service.port, "pspnet_queue_depth") == 0
        and metric(service.port, "pspnet_in_flight") == 0
    )


def assert_problem(reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json()) == {"error", "status"} and reply.json()["status"] == status


def test_a_running_request_is_stopped_by_its_deadline(slow):
    assert wait_for(lambda: idle(slow), within=30)
    stopped = metric(slow.port, STOPPED)
    late = segment(slow.port, LONG)
    assert_problem(late, 504)
    # The worker is back within one window: the next request is answered within its own
    # timeout, not after the ~30 s the late one would still have run.
    after = segment(slow.port, SHORT)
    assert after.status == 200, (after.status, after.body[:300])
    assert late.seconds + after.seconds < TIMEOUT + 5, (late.seconds, after.seconds)  # not ~30 s
    assert metric(slow.port, STOPPED) == stopped + 1


def test_a_client_leaving_a_running_request_stops_it(slow):
    assert wait_for(lambda: idle(slow), within=30)
    stopped = metric(slow.port, STOPPED)
    headers = {"Content-Type": "image/png", "Content-Length": str(len(LONG))}
    with raw_request(slow.port, "POST", "/v1/segment", headers, LONG):
        assert wait_for(lambda: metric(slow.port, "pspnet_in_flight") == 1, within=10)
    assert wait_for(lambda: metric(slow.port, STOPPED) == stopped + 1, within=2), (
        "the inference went on after its client left"
    )
    assert segment(slow.port, SHORT).status == 200


def trickle(sock: socket.socket, until: float, answers: list) -> None:
    """Send a byte every 0.3 s until the server answers (its status into ``answers``)."""
    try:
        while time.monotonic() < until:
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable:
                answers.append(read_status(sock, within=5)[0])
                return
            sock.sendall(b"\0")
    except OSError as err:  # the server closed the connection
        answers.append(type(err).__name__)


def test_slow_uploads_do_not_keep_the_slots(sliding):
    """Two uploads trickling a byte at a time hold reading places, never the queue's two."""
    assert wait_for(lambda: idle(sliding), within=30)
    headers = {"Content-Type": "image/png", "Content-Length": "100000"}
    sockets = [raw_request(sliding.port, "POST", "/v1/segment", headers, b"\x89PNG") for _ in "ab"]
    answers, until = [], time.monotonic() + 12
    threads = [threading.Thread(target=trickle, args=(s, until, answers)) for s in sockets]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # both are reading now
        start = time.monotonic()
        replies = [segment(sliding.port, SHORT) for _ in range(3)]  # one after the other
        waited = time.monotonic() - start
        sockets.append(raw_request(sliding.port, "POST", "/v1/segment", headers, b"\x89PNG"))
        sockets[-1].sendall(b"\0")  # a third upload, left open: every reading place is taken
        time.sleep(0.3)
        full = segment(sliding.port, SHORT)
    finally:
        for thread in threads:
            thread.join(timeout=15)
        for sock in sockets:
            sock.close()
    assert [r.status for r in replies] == [200, 200, 200], [r.body[:200] for r in replies]
    assert waited < UPLOAD_TIMEOUT, f"normal requests waited {waited:.1f} s behind slow uploads"
    assert full.status == 503  # three uploads in flight: every reading place taken
    assert answers == [408, 408], answers


def test_a_client_leaving_mid_upload_is_answered_499_quietly(sliding):
    def answered(status: str) -> float:
        return metric(sliding.port, REQUESTS, route="/v1/segment", status=status)

    before = {status: answered(status) for status in ("499", "500")}
    headers = {"Content-Type": "image/png", "Content-Length": str(len(LONG))}
    with raw_request(sliding.port, "POST", "/v1/segment", headers, LONG[:1000]):
        time.sleep(0.2)  # the server is reading the upload
    counted = wait_for(lambda: answered("499") == before["499"] + 1, within=5)
    assert counted, "the client that left was not answered 499"
    assert answered("500") == before["500"]
    assert "Traceback" not in sliding.log.read_text()


def test_images_over_the_decoders_limit_get_413(sliding):
    limits = call(sliding.port, "GET", "/v1/model").json()["limits"]
    assert limits["max_pixels"] == DECODERS_LIMIT  # --max-pixels is over it: clamped
    reply = segment(sliding.port, encode(scene(1500, 1500)))  # between the two limits
    assert_problem(reply, 413)
    assert sliding.alive


def test_the_default_pixel_limit_follows_the_memory_budget(keyed, checkpoint):
    described = call(keyed.port, "GET", "/v1/model", headers=keyed.headers).json()
    expected = Segmenter.from_checkpoint(checkpoint).pixel_limit(2048)
    assert described["limits"]["max_pixels"] == expected


def test_new_image_sizes_are_answered_without_a_stall(keyed):
    described = call(keyed.port, "GET", "/v1/model", headers=keyed.headers).json()
    assert described["backend"] == "eager"  # the default: never compiles on the request path
    for height, width in ((200, 300), (310, 170), (257, 263)):  # none seen before
        reply = call(
            keyed.port,
            "POST",
            "/v1/segment",
            encode(scene(height, width)),
            {"Content-Type": "image/png", **keyed.headers},
        )
        assert reply.status == 200, (reply.status, reply.body[:300])
        assert reply.seconds < 3, f"{height}x{width} took {reply.seconds:.1f} s"


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/readyz", "/metrics", "/v1/model", "/v1/segment"]
)
def test_the_api_key_is_enforced(keyed, path):
    method = "POST" if path == "/v1/segment" else "GET"
    body, kind = (SHORT, {"Content-Type": "image/png"}) if method == "POST" else (None, {})
    for refused in (
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": KEY[:-1]},
        {"Authorization": KEY},
    ):
        reply = call(keyed.port, method, path, body, {**kind, **refused})
        assert_problem(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"
    for accepted in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        assert call(keyed.port, method, path, body, {**kind, **accepted}).status == 200
    assert call(keyed.port, "GET", "/healthz").status == 200  # liveness needs no key


@pytest.mark.parametrize(
    "host", ["rebound.attacker.example", "rebound.attacker.example:80", "127.0.0.2", ""]
)
def test_a_foreign_host_gets_400(sliding, keyed, host):
    for path in ("/", "/v1/model"):
        assert_problem(call(sliding.port, "GET", path, headers={"Host": host}), 400)
    reply = call(keyed.port, "GET", "/v1/model", headers={"Host": host, **keyed.headers})
    assert_problem(reply, 400)


def test_the_bound_address_loopback_names_and_allowed_hosts_are_answered(sliding, keyed):
    port = sliding.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert call(port, "GET", "/v1/model", headers={"Host": host}).status == 200, host
    reply = call(keyed.port, "GET", "/v1/model", headers={"Host": PROXY_NAME, **keyed.headers})
    assert reply.status == 200
    assert_problem(call(port, "GET", "/v1/model", headers={"Host": PROXY_NAME}), 400)


@pytest.mark.parametrize("origin", ["https://attacker.example", "null", "http://127.0.0.2:80"])
def test_a_page_of_another_site_gets_403(sliding, origin):
    for method, path, body in (("POST", "/v1/segment", SHORT), ("GET", "/v1/model", None)):
        reply = call(
            sliding.port, method, path, body, {"Origin": origin, "Content-Type": "image/png"}
        )
        assert_problem(reply, 403)


def test_the_page_itself_and_an_allowed_origin_are_answered(sliding, keyed):
    own = {"Origin": f"http://127.0.0.1:{sliding.port}", "Content-Type": "image/png"}
    assert call(sliding.port, "POST", "/v1/segment", SHORT, own).status == 200
    proxied = {"Origin": f"https://{PROXY_NAME}", "Host": PROXY_NAME, **keyed.headers}
    assert call(keyed.port, "GET", "/v1/model", headers=proxied).status == 200


def load_error(service) -> str | None:
    try:
        return call(service.port, "GET", "/readyz", timeout=5).json()["error"]
    except OSError:  # not listening yet
        return None


def test_a_load_error_is_logged_and_answered_without_paths(broken):
    folder = str(broken.log.parent)
    assert wait_for(lambda: load_error(broken), within=120, step=0.2), broken.log.read_text()
    ready = call(broken.port, "GET", "/readyz")
    assert ready.status == 503 and ready.headers["retry-after"]
    segmented = segment(broken.port, SHORT)
    assert_problem(segmented, 503)
    for reply in (ready, segmented):
        assert "CheckpointError" in reply.body.decode()
        assert folder not in reply.body.decode() and "broken.safetensors" not in reply.body.decode()
    assert folder in broken.log.read_text()  # the details are in the server's log
    assert call(broken.port, "GET", "/healthz").status == 200


def test_ctrl_c_stops_a_running_request_within_seconds(wide_checkpoint, tmp_path):
    service = start_service(
        wide_checkpoint, tmp_path / "stopping.log", *SLOW_WINDOWS, env=ONE_THREAD
    )
    wait_ready(service)
    try:
        thread = threading.Thread(
            target=lambda: call(
                service.port, "POST", "/v1/segment", LONG, {"Content-Type": "image/png"}
            ),
            daemon=True,
        )
        thread.start()
        assert wait_for(lambda: metric(service.port, "pspnet_in_flight") == 1, within=10)
        start = time.monotonic()
        service.process.send_signal(signal.SIGINT)
        service.process.wait(timeout=30)
        seconds = time.monotonic() - start
    finally:
        service.stop()
    # uvicorn lets requests finish for 3 s, then the running one stops at its next window.
    assert seconds < 3 + 3, f"Ctrl+C took {seconds:.1f} s"
