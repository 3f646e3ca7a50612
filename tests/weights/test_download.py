"""Downloads against a local HTTP server on 127.0.0.1: verified, cached, shared, offline."""

import hashlib
import http.server
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import torch
from layouts import mmseg_checkpoint, semseg_checkpoint

import pspnet
from pspnet.checkpoints import build_model, save_model
from pspnet.errors import CheckpointError
from pspnet.models import ModelConfig, PSPNet
from pspnet.models.resnet import ResNet
from pspnet.weights import download
from pspnet.weights.download import cache_path, fetch


class Files(http.server.BaseHTTPRequestHandler):
    """GET /NAME serves files[NAME]; /truncated/NAME sends half; /status/CODE answers CODE."""

    files: dict[str, bytes] = {}
    requests: list[str] = []
    chunk_delay = 0.0

    def do_GET(self):  # noqa: N802 (the http.server API)
        type(self).requests.append(self.path)
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "status":
            self.send_error(int(name))
            return
        body = self.files.get(name if kind == "truncated" else self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
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


def publish(handler, name: str, data: bytes, right_hash: bool = True) -> str:
    """Serve ``data`` under ``name`` with torch.hub's ``-<sha256 prefix>.`` in the file name."""
    digest = hashlib.sha256(data).hexdigest()[:8] if right_hash else "00000000"
    stem, suffix = name.rsplit(".", 1)
    file_name = f"{stem}-{digest}.{suffix}"
    handler.files[file_name] = data
    return file_name


def cached_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "downloads").rglob("*") if p.is_file())


def test_first_download_then_cache_hit_with_the_server_stopped(server, tmp_path):
    base, handler, stop = server
    torch.manual_seed(0)
    model = PSPNet(3, backbone="resnet18", base_width=4).eval()
    save_model(model, tmp_path / "m.safetensors")
    name = publish(handler, "tiny.safetensors", (tmp_path / "m.safetensors").read_bytes())
    url = f"{base}/{name}"
    seen = []
    loaded = pspnet.load_model(url, progress=lambda done, total: seen.append((done, total)))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values()))  # fmt: skip
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
    options = {"contract_dilation": True, "align_corners": False} if layout == "mmseg" else {}
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
    first, second = fetch(f"{base}/a/w.bin"), fetch(f"{base}/b/w.bin")
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
        fetch(f"{base}/status/{code}")
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
    import os

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
