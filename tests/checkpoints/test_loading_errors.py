"""Every file that cannot be read as a checkpoint raises CheckpointError naming it, in our words.

torch's weights_only refusal advises retrying with ``weights_only=False``, which would run the
file's code; that advice must never reach the user.
"""

import builtins
import pickle
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pspnet
from pspnet import CheckpointError
from pspnet.checkpoints import build_model
from pspnet.models.pspnet import ModelConfig


def torch_file(path: Path, **options) -> bytes:
    torch.save({"weight": torch.zeros(64, 64)}, path, **options)
    return path.read_bytes()


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def text(path: Path) -> None:
    path.write_text("not a checkpoint at all\n")


def truncated_zip(path: Path) -> None:
    data = torch_file(path)
    path.write_bytes(data[: len(data) // 2])


def zip_without_its_end(path: Path) -> None:
    data = torch_file(path)
    path.write_bytes(data[:-30])


def truncated_legacy(path: Path) -> None:
    data = torch_file(path, _use_new_zipfile_serialization=False)
    path.write_bytes(data[: len(data) // 2])


def python_object(path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "a": object()}, path)


def python_object_legacy(path: Path) -> None:
    torch.save({"a": object()}, path, _use_new_zipfile_serialization=False)


def plain_pickle_of_object(path: Path) -> None:
    path.write_bytes(pickle.dumps({"a": object()}, protocol=2))


def not_a_dict(path: Path) -> None:
    torch.save([torch.zeros(2)], path)


def truncated_safetensors(path: Path) -> None:
    save_file({"weight": torch.zeros(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:200])


def directory(path: Path) -> None:
    path.mkdir()


OBJECTS = r"holds Python objects other than tensors \(object\), which pspnet does not unpickle"


CASES = [
    (random_bytes, r"not a readable PyTorch weights file \(corrupt or truncated\)"),
    (empty, r"not a readable PyTorch weights file \(empty or truncated\)"),
    (text, r"not a readable PyTorch weights file \(corrupt or truncated\)"),
    (truncated_zip, r"not a readable PyTorch weights file \(corrupt or truncated\)"),
    (zip_without_its_end, r"not a readable PyTorch weights file \(corrupt or truncated\)"),
    (truncated_legacy, r"not a readable PyTorch weights file \(corrupt or truncated\)"),
    (python_object, OBJECTS),
    (python_object_legacy, OBJECTS),
    (plain_pickle_of_object, OBJECTS),
    (not_a_dict, r"expected a dict of tensors, found list"),
    (truncated_safetensors, r"not a readable safetensors file"),
    (directory, r"a directory, not a checkpoint file"),
]


@pytest.mark.parametrize(("write", "reason"), CASES, ids=[write.__name__ for write, _ in CASES])
def test_unreadable_checkpoint_is_refused_safely(write, reason, tmp_path):
    path = tmp_path / "model.pth"
    write(path)
    with pytest.raises(CheckpointError, match=reason) as caught:
        pspnet.load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "weights_only" not in message


@pytest.mark.parametrize(
    ("write", "reason"),
    [(truncated_zip, r"\(corrupt or truncated\)"), (python_object, OBJECTS)],
    ids=["truncated_zip", "python_object"],
)
def test_unreadable_backbone_weights_are_refused_safely(write, reason, tmp_path):
    path = tmp_path / "resnet18.pth"
    write(path)
    config = ModelConfig(4, "resnet18", base_width=4)
    with pytest.raises(CheckpointError, match=reason) as caught:
        build_model(config, backbone_weights=path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "weights_only" not in str(caught.value)


def test_unreadable_permissions_are_named(tmp_path, monkeypatch):
    # Tests run as root, which reads a chmod-000 file anyway, so the system's refusal is
    # simulated where the file is opened.
    path = tmp_path / "model.pth"
    torch_file(path)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(CheckpointError, match="Permission denied") as caught:
        pspnet.load_model(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_optimised_model_is_not_saved(tmp_path):
    from pspnet.checkpoints import save_model
    from pspnet.errors import CheckpointError
    from pspnet.inference.optimized.optimize import optimize
    from pspnet.models import PSPNet

    fast = optimize(PSPNet(3, backbone="resnet18", base_width=4), "fp32", "eager")
    with pytest.raises(CheckpointError, match="save the model it was made from"):
        save_model(fast, tmp_path / "fast.safetensors")
    assert not (tmp_path / "fast.safetensors").exists()
