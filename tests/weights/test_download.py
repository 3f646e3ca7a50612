"""Downloads against a local HTTP server on 127.0.0.1: verified, cached, shared, offline."""

import email.message
import fcntl
import hashlib
import http.server
import io
import json
import multiprocessing
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch
from layouts import mmseg_checkpoint, semseg_checkpoint

import pspnet
from pspnet import downloads
from pspnet.checkpoints import build_model, save_model
from pspnet.errors import CheckpointError
from pspnet.models import ModelConfig, PSPNet
from pspnet.models.resnet import ResNet
from pspnet.weights import download, verify
from pspnet.weights.download import cache_path, fetch


class Files(http.server.BaseHTTPRequestHandler):
    """GET /NAME serves files[NAME]; /truncated/NAME sends half; /status/CODE answers CODE;
    /unsized/NAME sends no Content-Length (the body ends when the connection closes);
    /redirect/NAME answers 302 to /NAME."""

    files: dict[str, bytes] = {}
    requests: list[str] = []
    chunk_delay = 0.0

    def do_GET(self):  # noqa: N802 (the http.server API)
        type(self).requests.append(self.path)
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "status":
            self.send_error(int(name))
            return
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.files.get(name if kind in ("truncated", "unsized") else self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if kind != "unsized":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = body[: len(body) // 2] if kind == "truncated" else body
        for first in range(0, len(sent), 4096):
            self.wfile.write(sent[first : first + 4096])
            time.sleep(self.chunk_delay)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server on 127.0.0.1 and an empty cache; yields (base URL, handler class, stop)."""
    monkeypatch.setenv("PSPNET_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PSPNET_OFFLINE", raising=False)
    handler = type("Handler", (Files,), {"files": {}, "requests": [], "chunk_delay": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.handle_error = lambda *args: None  # a client that hung up on purpose: no traceback
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    running = [True]

    def stop():
        if running[0]:
            httpd.shutdown()
            httpd.server_close()
            running[0] = False

    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler, stop
    stop()


def serve_tls(handler, tmp_path, monkeypatch) -> http.server.ThreadingHTTPServer:
    """``handler`` served over TLS on 127.0.0.1, its certificate trusted as a system store's."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl for a certificate")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def https(server, tmp_path, monkeypatch):
    """The server's files over TLS as well; yields its base URL, ``https://127.0.0.1:PORT``."""
    httpd = serve_tls(server[1], tmp_path, monkeypatch)
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def publish(handler, name: str, data: bytes, right_hash: bool = True) -> str:
    """Serve ``data`` under ``name`` with torch.hub's ``-<sha256 prefix>.`` in the file name."""
    digest = hashlib.sha256(data).hexdigest()[:8] if right_hash else "00000000"
    stem, suffix = name.rsplit(".", 1)
    file_name = f"{stem}-{digest}.{suffix}"
    handler.files[file_name] = data
    return file_name


def cached_files(home: Path) -> list[Path]:
    """The files in the cache, verification records apart (``records`` lists those)."""
    return sorted(
        p
        for p in (home / "downloads").rglob("*")
        if p.is_file() and not p.name.endswith(".verified.json")
    )


def records(home: Path) -> list[Path]:
    return sorted((home / "downloads").rglob("*.verified.json"))


def test_first_download_then_cache_hit_with_the_server_stopped(server, tmp_path):
    base, handler, stop = server
    torch.manual_seed(0)
    model = PSPNet(3, backbone="resnet18", base_width=4).eval()
    save_model(model, tmp_path / "m.safetensors")
    name = publish(handler, "tiny.safetensors", (tmp_path / "m.safetensors").read_bytes())
    url = f"{base}/{name}"
    seen = []
    loaded = pspnet.load_model(url, progress=lambda done, total: seen.append((done, total)))
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values())
    )
    size = (tmp_path / "m.safetensors").stat().st_size
    assert seen[-1] == (size, size) and handler.requests == [f"/{name}"]
    assert cached_files(tmp_path / "cache") == [cache_path(url)]
    stop()
    again = pspnet.load_model(url)  # the server is gone: only the cache can answer
    assert torch.equal(again.head.classifier.weight, model.head.classifier.weight)


@pytest.mark.parametrize("layout", ["native", "semseg", "mmseg"])
def test_each_format_loads_from_a_url(server, tmp_path, trained, layout):
    base, handler, _ = server
    stem = "deep_narrow" if layout == "mmseg" else "deep"
    options = {}
    if layout == "mmseg":  # mmseg's ResNetV1c, resizes and BasicBlock
        options = {"contract_dilation": True, "align_corners": False}
        options["basic_block_dilation"] = "first_conv"
    model = trained(PSPNet(3, backbone="resnet18", base_width=4, stem=stem, **options))
    path = tmp_path / f"{layout}.bin"
    if layout == "native":
        save_model(model, path)
    elif layout == "semseg":
        torch.save(semseg_checkpoint(model.state_dict()), path)
    else:
        torch.save(mmseg_checkpoint(model.state_dict(), model.config), path)
    url = f"{base}/{publish(handler, f'{layout}.pth', path.read_bytes())}"
    loaded = pspnet.load_model(url)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_url_is_cached_by_its_full_address(server, tmp_path):
    base, handler, _ = server
    handler.files["a/w.bin"] = b"first"
    handler.files["b/w.bin"] = b"second"
    first = fetch(f"{base}/a/w.bin", sha256=hashlib.sha256(b"first").hexdigest())
    second = fetch(f"{base}/b/w.bin", sha256=hashlib.sha256(b"second").hexdigest())
    assert first != second and first.name == second.name == "w.bin"
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")


def test_a_hash_mismatch_caches_nothing(server, tmp_path):
    base, handler, _ = server
    name = publish(handler, "weights.pth", b"x" * 10_000, right_hash=False)
    with pytest.raises(CheckpointError, match=r"does not match the expected 00000000") as error:
        fetch(f"{base}/{name}")
    assert f"{base}/{name}" in str(error.value)
    assert cached_files(tmp_path / "cache") == []
    good = hashlib.sha256(b"y").hexdigest()
    handler.files["plain.bin"] = b"y"
    assert fetch(f"{base}/plain.bin", sha256=good).read_bytes() == b"y"  # the full digest
    with pytest.raises(CheckpointError, match="does not match"):
        handler.files["other.bin"] = b"y"
        fetch(f"{base}/other.bin", sha256="ab" + good[2:])


def test_a_truncated_body_caches_nothing(server, tmp_path):
    base, handler, _ = server
    name = publish(handler, "weights.pth", bytes(range(256)) * 400)
    with pytest.raises(CheckpointError, match=r"stopped at|broke off") as error:
        fetch(f"{base}/truncated/{name}")
    assert f"{base}/truncated/{name}" in str(error.value)
    assert cached_files(tmp_path / "cache") == []


@pytest.mark.parametrize("code", [404, 500])
def test_http_errors_name_the_url_and_cache_nothing(server, tmp_path, code):
    base, _, _ = server
    with pytest.raises(CheckpointError, match=f"HTTP {code}") as error:
        fetch(f"{base}/status/{code}", sha256="12345678")
    assert f"{base}/status/{code}" in str(error.value)
    assert cached_files(tmp_path / "cache") == []


def test_no_server_names_the_url_and_where_to_put_the_file(server, tmp_path):
    base, _, stop = server
    stop()
    url = f"{base}/gone-12345678.pth"
    with pytest.raises(CheckpointError, match="cannot download") as error:
        fetch(url)
    assert url in str(error.value) and str(cache_path(url)) in str(error.value)


def _fetch_in_a_process(url: str, home: str, results) -> None:
    os.environ["PSPNET_HOME"] = home
    results.put(str(fetch(url)))


def test_two_processes_fetching_at_once_download_once(server, tmp_path):
    base, handler, _ = server
    handler.chunk_delay = 0.002  # ~100 chunks: long enough for the two to overlap
    data = bytes(range(256)) * 1600
    name = publish(handler, "shared.pth", data)
    url = f"{base}/{name}"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_fetch_in_a_process, args=(url, str(tmp_path / "cache"), results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    paths = {results.get(timeout=5) for _ in workers}
    assert paths == {str(cache_path(url))}
    assert Path(paths.pop()).read_bytes() == data
    assert handler.requests == [f"/{name}"]  # the second found the first one's file
    assert cached_files(tmp_path / "cache") == [cache_path(url)]


def test_offline_uses_the_cache_and_names_the_path_for_a_missing_file(server, monkeypatch):
    base, handler, _ = server
    name = publish(handler, "w.pth", b"cached bytes")
    fetch(f"{base}/{name}")
    monkeypatch.setenv("PSPNET_OFFLINE", "1")
    assert download.offline()
    assert fetch(f"{base}/{name}").read_bytes() == b"cached bytes"
    missing = f"{base}/other-12345678.pth"
    with pytest.raises(CheckpointError, match="PSPNET_OFFLINE") as error:
        fetch(missing)
    assert missing in str(error.value) and str(cache_path(missing)) in str(error.value)
    assert handler.requests == [f"/{name}"]  # offline never touched the network


def test_torchvision_backbone_by_url(server, tmp_path, trained):
    base, handler, _ = server
    backbone = trained(ResNet("resnet18", "torchvision", base_width=4))
    state = {"conv1.weight": backbone.stem[0].conv.weight}
    state.update({f"bn1.{k}": v for k, v in backbone.stem[0].bn.state_dict().items()})
    state.update({k: v for k, v in backbone.state_dict().items() if k.startswith("layer")})
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 32), torch.zeros(1000)
    torch.save(state, tmp_path / "r18.pth")
    name = publish(handler, "resnet18.pth", (tmp_path / "r18.pth").read_bytes())
    config = ModelConfig(3, backbone="resnet18", stem="torchvision", base_width=4)
    model = build_model(config, f"{base}/{name}")
    assert torch.equal(model.backbone.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)
    assert torch.equal(model.backbone.stem[0].bn.running_var, backbone.stem[0].bn.running_var)


# --- the verified cache ------------------------------------------------------------------------


def test_a_cached_file_corrupted_after_download_is_caught(server, tmp_path):
    base, handler, _ = server
    data = bytes(range(256)) * 100
    url = f"{base}/{publish(handler, 'w.pth', data)}"
    path = fetch(url)
    assert records(tmp_path / "cache") == [verify.record_path(path)]
    full = hashlib.sha256(data).hexdigest()
    assert json.loads(verify.record_path(path).read_text())["sha256"] == full
    path.write_bytes(data[:1000])  # truncated by a full disk, or a crash of another tool
    with pytest.raises(CheckpointError, match="corrupt") as error:
        fetch(url)
    message = str(error.value)
    assert (
        str(path) in message
        and full in message
        and hashlib.sha256(data[:1000]).hexdigest() in message
    )
    assert "delete the folder" in message and handler.requests == [f"/{path.name}"]
    path.write_bytes(bytes(reversed(data)))  # the same size, other bytes
    with pytest.raises(CheckpointError, match="corrupt"):
        fetch(url)


def test_a_touched_but_unchanged_file_is_hashed_once_and_used(server, monkeypatch):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'w.pth', b'weights' * 1000)}"
    path = fetch(url)
    hashed = []
    file_sha256 = verify.file_sha256
    monkeypatch.setattr(verify, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    assert fetch(url) == path and hashed == []  # size and mtime as recorded: trusted
    mtime = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(mtime, mtime))  # copied with cp, restored from a backup
    assert fetch(url) == path and hashed == [path]
    assert json.loads(verify.record_path(path).read_text())["mtime_ns"] == mtime
    assert fetch(url) == path and hashed == [path]  # the record was brought up to date


def test_a_hand_placed_file_is_checked_against_the_expected_hash_on_first_use(server, monkeypatch):
    base, handler, _ = server
    monkeypatch.setenv("PSPNET_OFFLINE", "1")
    data = b"the publisher's file" * 100
    right = f"{base}/{publish(handler, 'right.pth', data)}"
    cache_path(right).parent.mkdir(parents=True)
    cache_path(right).write_bytes(data)
    assert fetch(right).read_bytes() == data
    record = json.loads(verify.record_path(cache_path(right)).read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["url"] == right
    wrong = f"{base}/{publish(handler, 'wrong.pth', data)}"
    cache_path(wrong).parent.mkdir(parents=True)
    cache_path(wrong).write_bytes(b"something else")
    with pytest.raises(CheckpointError, match="corrupt") as error:
        fetch(wrong)
    expected = wrong.rsplit("-", 1)[1].split(".")[0]
    assert f"expects SHA-256 {expected}" in str(error.value)
    assert hashlib.sha256(b"something else").hexdigest() in str(error.value)
    assert not verify.record_path(cache_path(wrong)).exists()
    assert handler.requests == []


def _same_prefix(data: bytes, digits: int) -> bytes:
    """Other bytes of the same length whose SHA-256 starts with the same ``digits`` hex digits
    (8 digits would take billions of tries; the rule checked is the same)."""
    prefix = hashlib.sha256(data).hexdigest()[:digits]
    for i in range(1 << 24):
        other = data[:-8] + i.to_bytes(8, "big")
        if other != data and hashlib.sha256(other).hexdigest().startswith(prefix):
            return other
    raise AssertionError("no collision found")


def test_the_full_digest_recorded_at_first_check_is_enforced_after(server, tmp_path):
    base, handler, _ = server
    data = b"published weights" * 64
    handler.files["w.pth"] = data
    prefix = hashlib.sha256(data).hexdigest()[:4]
    path = fetch(f"{base}/w.pth", sha256=prefix)
    full = json.loads(verify.record_path(path).read_text())["sha256"]
    assert full == hashlib.sha256(data).hexdigest()
    substitute = _same_prefix(data, 4)
    path.write_bytes(substitute)  # matches the prefix: the prefix alone would let it through
    with pytest.raises(CheckpointError, match=f"verified as SHA-256 {full}"):
        fetch(f"{base}/w.pth", sha256=prefix)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="now expects 0000"):  # the entry changed
        fetch(f"{base}/w.pth", sha256="0000")


def test_an_unhashed_https_url_is_downloaded_with_a_warning_and_still_recorded(server, https):
    _, handler, _ = server
    data = b"no hash anywhere" * 10
    handler.files["plain.bin"] = data
    url = f"{https}/plain.bin"
    with pytest.warns(UserWarning, match="unverified") as caught:
        path = fetch(url)
    # Only ours: an earlier test's unclosed socket may be collected meanwhile (ResourceWarning).
    (unverified,) = [str(w.message) for w in caught if "unverified" in str(w.message)]
    assert url in unverified
    record = json.loads(verify.record_path(path).read_text())
    assert record["expected"] is None and record["sha256"] == hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # from the cache: checked against the record, no warning
        assert fetch(url) == path
    path.write_bytes(b"no hash anywhere")
    with pytest.raises(CheckpointError, match="corrupt"):
        fetch(url)


def test_a_hand_placed_file_for_an_unhashed_url_is_refused_offline(server, https, monkeypatch):
    base, handler, _ = server
    handler.files["plain.bin"] = b"served"
    url = f"{https}/plain.bin"
    cache_path(url).parent.mkdir(parents=True)
    cache_path(url).write_bytes(b"put here by hand")
    monkeypatch.setenv("PSPNET_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="refused") as error:
        fetch(url)
    assert str(cache_path(url)) in str(error.value) and "by its path" in str(error.value)
    missing = f"{https}/other.bin"
    with pytest.raises(CheckpointError, match="cannot be verified") as error:
        fetch(missing)
    assert str(cache_path(missing)) in str(error.value)
    with pytest.raises(CheckpointError, match="checked against the expected SHA-256 prefix 1234"):
        fetch(f"{base}/other-12345678.pth")
    monkeypatch.delenv("PSPNET_OFFLINE")
    with pytest.warns(UserWarning, match="unverified"):
        assert fetch(url).read_bytes() == b"served"  # online: downloaded afresh instead


def test_a_plain_http_url_with_no_sha256_is_refused(server, tmp_path):
    base, handler, _ = server
    handler.files["plain.bin"] = b"in the clear"
    url = f"{base}/plain.bin"
    with pytest.raises(CheckpointError, match="refused: plain http with no SHA-256") as error:
        pspnet.weights.resolve(url)  # what every command that takes a checkpoint calls
    message = str(error.value)
    assert message.startswith(url) and "https address" in message and "pspnet models" in message
    assert "name-<sha256 prefix>.pth" in message and "sha256=" in message
    assert handler.requests == [] and cached_files(tmp_path / "cache") == []
    full = hashlib.sha256(b"in the clear").hexdigest()
    assert fetch(url, sha256=full).read_bytes() == b"in the clear"  # a hash, given: verified
    with pytest.raises(CheckpointError, match="refused"):
        fetch(url)  # cached now, but the same address without its hash is still refused


# --- redirects, bounds, leftovers, the lock, durability ----------------------------------------


def _redirect(old: str, new: str) -> urllib.request.Request | None:
    handler = downloads.HttpsRedirectHandler(CheckpointError)
    return handler.redirect_request(
        urllib.request.Request(old), io.BytesIO(), 302, "Found", email.message.Message(), new
    )


def test_a_redirect_from_https_to_http_is_refused():
    old, new = "https://download.example.org/w-12345678.pth", "http://mirror.example.org/w.pth"
    with pytest.raises(CheckpointError, match="from https to plain http") as error:
        _redirect(old, new)
    assert old in str(error.value) and new in str(error.value)
    assert _redirect(old, "https://mirror.example.org/w.pth").full_url.startswith("https://")
    assert _redirect("http://a.example.org/w", "http://b.example.org/w") is not None


def test_an_http_redirect_is_followed(server):
    base, handler, _ = server
    name = publish(handler, "w.pth", b"moved")
    assert fetch(f"{base}/redirect/{name}").read_bytes() == b"moved"
    assert handler.requests == [f"/redirect/{name}", f"/{name}"]


def test_an_https_server_redirecting_to_http_is_refused(server, tmp_path, monkeypatch):
    base, handler, _ = server
    name = publish(handler, "w.pth", b"in the clear")

    class Moved(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"{base}/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = serve_tls(Moved, tmp_path, monkeypatch)
    url = f"https://127.0.0.1:{httpd.server_address[1]}/{name}"
    try:
        with pytest.raises(CheckpointError, match="from https to plain http") as error:
            fetch(url)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert url in str(error.value) and f"{base}/{name}" in str(error.value)
    assert handler.requests == [] and cached_files(tmp_path / "cache") == []


def test_a_content_length_over_the_limit_is_refused_before_the_body(server, tmp_path, monkeypatch):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'big.pth', bytes(100_000))}"
    seen = []
    with pytest.raises(CheckpointError, match=r"announces 100,000 bytes, over the limit of 1,000"):
        fetch(url, progress=lambda done, total: seen.append(done), max_bytes=1000)
    assert seen == []  # not a byte of the body was read
    monkeypatch.setenv("PSPNET_MAX_DOWNLOAD_BYTES", "2000")
    with pytest.raises(CheckpointError, match="limit of 2,000 bytes"):
        fetch(url)
    assert cached_files(tmp_path / "cache") == []
    assert list((tmp_path / "cache" / "downloads").rglob("*.part")) == []


def test_a_body_growing_past_the_limit_is_cut_off(server, tmp_path):
    base, handler, _ = server
    name = publish(handler, "endless.pth", bytes(100_000))
    seen = []
    with pytest.raises(CheckpointError, match=r"passed 10,000 bytes and was cut off") as error:
        fetch(
            f"{base}/unsized/{name}",
            progress=lambda done, total: seen.append(done),
            max_bytes=10_000,
        )
    assert f"{base}/unsized/{name}" in str(error.value)
    assert seen and max(seen) <= 10_000
    assert cached_files(tmp_path / "cache") == []
    assert list((tmp_path / "cache" / "downloads").rglob("*.part")) == []


def test_a_slow_download_is_stopped_at_its_deadline(server, tmp_path, monkeypatch):
    base, handler, _ = server
    handler.chunk_delay = 0.02  # 100 chunks: 2 s
    url = f"{base}/{publish(handler, 'slow.pth', bytes(409_600))}"
    monkeypatch.setenv("PSPNET_DOWNLOAD_TIMEOUT", "0.3")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"took longer than 0.3 s") as error:
        fetch(url)
    assert time.monotonic() - start < 1.5 and url in str(error.value)
    assert cached_files(tmp_path / "cache") == []


def test_a_stalled_transfer_names_the_url(server, tmp_path, monkeypatch):
    base, handler, _ = server
    handler.chunk_delay = 1.0  # one chunk, then a pause longer than the read timeout
    url = f"{base}/{publish(handler, 'stuck.pth', bytes(8192))}"
    monkeypatch.setattr(downloads, "TIMEOUT_SECONDS", 0.2)
    with pytest.raises(CheckpointError, match=r"stalled \(no data for 0.2 s\) at 4,096 bytes"):
        fetch(url)
    assert cached_files(tmp_path / "cache") == []


def test_a_killed_downloads_part_file_is_removed_by_the_next_attempt(server, tmp_path):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'w.pth', b'whole')}"
    folder = cache_path(url).parent
    folder.mkdir(parents=True)
    stale = folder / f".{cache_path(url).name}.k1ll3d.part"  # what mkstemp named it
    stale.write_bytes(b"half a downl")
    assert fetch(url).read_bytes() == b"whole"
    assert not stale.exists()
    left = sorted(p.name for p in folder.iterdir())
    assert left == [cache_path(url).name, verify.record_path(cache_path(url)).name]


def _hold_lock(url: str):
    """Take the lock of ``url``'s download as another process would (a separate open file)."""
    locks = download.cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    held = open(locks / f"{cache_path(url).parent.name}.lock", "w")  # noqa: SIM115
    fcntl.flock(held, fcntl.LOCK_EX)
    return held


def test_a_held_lock_is_reported_waited_for_and_given_up(server, monkeypatch):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'w.pth', b'weights')}"
    monkeypatch.setenv("PSPNET_LOCK_TIMEOUT", "0.3")
    held = _hold_lock(url)
    release = threading.Timer(5, held.close)  # a fetch that would wait forever fails, not hangs
    release.start()
    start = time.monotonic()
    try:
        with pytest.warns(UserWarning, match="waiting for another process") as caught:
            with pytest.raises(CheckpointError, match="held the download lock") as error:
                fetch(url)
    finally:
        release.cancel()
        held.close()
    assert 0.3 <= time.monotonic() - start < 3
    assert len(caught) == 1 and cache_path(url).name in str(caught[0].message)
    assert f"{cache_path(url).parent.name}.lock" in str(error.value)
    assert handler.requests == []


def test_a_lock_released_meanwhile_lets_the_download_go_on(server, monkeypatch):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'w.pth', b'weights')}"
    monkeypatch.setenv("PSPNET_LOCK_TIMEOUT", "30")
    held = _hold_lock(url)
    release = threading.Timer(0.3, held.close)
    release.start()
    try:
        with pytest.warns(UserWarning, match="waiting for another process") as caught:
            assert fetch(url).read_bytes() == b"weights"
    finally:
        release.cancel()
        held.close()
    assert len(caught) == 1


def test_a_bound_that_is_not_a_positive_number_is_refused(server, monkeypatch):
    from pspnet.errors import ConfigError

    base, handler, _ = server
    monkeypatch.setenv("PSPNET_LOCK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="PSPNET_LOCK_TIMEOUT='soon'"):
        fetch(f"{base}/{publish(handler, 'w.pth', b'weights')}")


def test_the_download_is_flushed_to_the_disk_before_the_rename(server, monkeypatch):
    base, handler, _ = server
    url = f"{base}/{publish(handler, 'w.pth', b'weights')}"
    path = cache_path(url)
    events = []
    replace = os.replace
    monkeypatch.setattr(download, "fsync_file", lambda p: events.append(("fsync", Path(p))))
    monkeypatch.setattr(download, "fsync_folder", lambda p: events.append(("fsync", Path(p))))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("rename", Path(a), Path(b))), replace(a, b))
    )
    fetch(url)
    renamed = next(e for e in events if e[0] == "rename" and e[2] == path)
    part = renamed[1]
    assert part.name.endswith(".part")
    at = events.index(renamed)
    assert ("fsync", part) in events[:at]
    assert ("fsync", path.parent) in events[at + 1 :]
