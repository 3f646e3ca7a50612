"""The inference routine against a brute-force port of hszhao/semseg's test protocol, hand
cases, and the whole-image-buffer routine of earlier versions (previous_routine.py)."""

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pspnet.config import InferenceConfig
from pspnet.inference.memory import fit_window_batch, windows_that_fit
from pspnet.inference.protocol import Network, scaled_size, segment_tensor, window_starts
from pspnet.models import PSPNet

# ---- reference: semseg's tool/test.py, rewritten in plain loops, numpy float64 and cv2 ----


def reference_net(model, window: np.ndarray, flip: bool) -> np.ndarray:
    """(h, w, 3) window -> (h, w, C) softmax, mirrored and averaged like semseg's net_process."""
    batch = torch.from_numpy(window.transpose(2, 0, 1).copy())[None]
    if flip:
        batch = torch.cat([batch, batch.flip(3)])
    with torch.no_grad():
        logits = model(batch).double().numpy()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    out = (probs[0] + probs[1][:, :, ::-1]) / 2 if flip else probs[0]
    return out.transpose(1, 2, 0)


def reference_scale(model, image, classes, crop_h, crop_w, h, w, stride_rate, flip):
    """semseg's scale_process: pad with the (normalised) mean, slide, average, resize back."""
    ori_h, ori_w, _ = image.shape
    pad_h, pad_w = max(crop_h - ori_h, 0), max(crop_w - ori_w, 0)
    pad_h_half, pad_w_half = int(pad_h / 2), int(pad_w / 2)
    image = np.pad(
        image, ((pad_h_half, pad_h - pad_h_half), (pad_w_half, pad_w - pad_w_half), (0, 0))
    )
    new_h, new_w, _ = image.shape
    stride_h, stride_w = int(np.ceil(crop_h * stride_rate)), int(np.ceil(crop_w * stride_rate))
    grid_h = int(np.ceil(float(new_h - crop_h) / stride_h) + 1)
    grid_w = int(np.ceil(float(new_w - crop_w) / stride_w) + 1)
    prediction = np.zeros((new_h, new_w, classes))
    count = np.zeros((new_h, new_w))
    for index_h in range(grid_h):
        for index_w in range(grid_w):
            s_h = index_h * stride_h
            e_h = min(s_h + crop_h, new_h)
            s_h = e_h - crop_h
            s_w = index_w * stride_w
            e_w = min(s_w + crop_w, new_w)
            s_w = e_w - crop_w
            count[s_h:e_h, s_w:e_w] += 1
            prediction[s_h:e_h, s_w:e_w] += reference_net(model, image[s_h:e_h, s_w:e_w], flip)
    prediction /= count[:, :, None]
    prediction = prediction[pad_h_half : pad_h_half + ori_h, pad_w_half : pad_w_half + ori_w]
    return cv2.resize(prediction, (w, h), interpolation=cv2.INTER_LINEAR)


def reference_probs(model, image: torch.Tensor, classes: int, config: InferenceConfig):
    """semseg's test loop over scales; ``mode="whole"`` runs the scaled image in one go."""
    image = image.numpy().transpose(1, 2, 0)  # (H, W, 3) float32, normalised
    h, w, _ = image.shape
    base_size = config.base_size or max(h, w)
    prediction = np.zeros((h, w, classes))
    for scale in config.scales:
        long_size = round(scale * base_size)
        new_h = new_w = long_size
        if h > w:
            new_w = round(long_size / float(h) * w)
        else:
            new_h = round(long_size / float(w) * h)
        image_scale = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if config.mode == "whole":
            probs = reference_net(model, image_scale, config.flip)
            prediction += cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            crop_h, crop_w = config.crop_size
            prediction += reference_scale(
                model, image_scale, classes, crop_h, crop_w, h, w, config.stride_rate, config.flip
            )
    return prediction / len(config.scales)


# ---- small models whose outputs are known or depend on the window ----


class Identity(nn.Module):
    """Logits equal to the 3 input channels."""

    def __init__(self):
        super().__init__()
        self.eval()

    def forward(self, images):
        return images


class Pointwise(nn.Module):
    """A fixed 1x1 convolution: each pixel's logits from its own colour; mirror-equivariant."""

    def __init__(self, classes: int = 4):
        super().__init__()
        weight = torch.arange(3 * classes, dtype=torch.float32).reshape(classes, 3, 1, 1)
        self.register_buffer("weight", torch.sin(weight) * 2)
        self.eval()

    def forward(self, images):
        return nn.functional.conv2d(images, self.weight)


class WindowDependent(Pointwise):
    """Adds the window's mean colour and a left-to-right ramp, so every window differs.

    The mean makes a pixel's logits depend on the window it is seen in (as the pyramid does);
    the ramp breaks mirror symmetry, so ``flip`` changes the result.
    """

    def forward(self, images):
        pointwise = super().forward(images)  # (N, C, h, w)
        context = super().forward(images.mean(dim=(2, 3), keepdim=True))  # (N, C, 1, 1)
        ramp = torch.linspace(-1, 1, images.shape[-1])  # (w,)
        classes = torch.arange(pointwise.shape[1], dtype=torch.float32)[:, None, None]
        return pointwise + 0.5 * context + classes * ramp  # (N, C, h, w)


def network(model: nn.Module, classes: int) -> Network:
    """A model returning logits at its input size (upsampling them is then the identity)."""
    return Network(model, classes, False, torch.device("cpu"))


def predict_probs(model, image, classes, config=None, progress=None) -> torch.Tensor:
    """(C, H, W) probabilities: PSPNets at their output stride, other models as they are."""
    net = Network.of(model) if isinstance(model, PSPNet) else network(model, classes)
    return segment_tensor(net, image, config, progress, probs=True).probs


def tiny_pspnet() -> PSPNet:
    torch.manual_seed(0)
    return PSPNet(num_classes=3, backbone="resnet18", base_width=4).eval()


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed))


# ---- agreement with the reference ----


@pytest.mark.parametrize(
    ("size", "config"),
    [
        # smaller than the crop in height (padding), larger in width (windows overlap)
        ((17, 41), InferenceConfig(crop_size=(24, 24), flip=False)),
        ((17, 41), InferenceConfig(crop_size=(24, 20), stride_rate=0.5, flip=True)),
        # larger than the crop in both, tall, several stride rates
        ((45, 31), InferenceConfig(crop_size=(16, 16), stride_rate=1.0, flip=True)),
        ((45, 31), InferenceConfig(crop_size=(16, 12), stride_rate=0.4, window_batch=3)),
        # three scales of a base size: some scales need padding, some windows
        ((30, 44), InferenceConfig(crop_size=(20, 20), scales=(0.5, 1.0, 1.25), base_size=40)),
        ((44, 30), InferenceConfig(crop_size=(18, 22), scales=(0.75, 1.5), flip=False)),
        ((30, 44), InferenceConfig(mode="whole", scales=(0.5, 1.0, 1.75), base_size=36)),
    ],
)
def test_matches_reference_protocol(size, config):
    model = WindowDependent()
    image = random_image(*size)
    expected = reference_probs(model, image, 4, config)
    got = predict_probs(model, image, 4, config).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("flip", [False, True])
def test_pspnet_matches_reference_protocol(flip):
    model = tiny_pspnet()
    image = random_image(40, 57, seed=1)
    config = InferenceConfig(crop_size=(33, 33), scales=(0.75, 1.0), base_size=52, flip=flip)
    expected = reference_probs(model, image, 3, config)
    got = predict_probs(model, image, 3, config).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


# ---- hand-checked cases ----


@pytest.mark.parametrize(
    ("length", "crop", "stride", "starts"),
    [
        (4, 4, 3, [0]),
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),  # the last window clamps back to the border
        (512, 473, 316, [0, 39]),  # ADE20K: ceil(473 * 2/3) = 316
        (2048, 713, 476, [0, 476, 952, 1335]),  # Cityscapes width
        (1024, 713, 476, [0, 311]),  # Cityscapes height
    ],
)
def test_window_starts(length, crop, stride, starts):
    assert window_starts(length, crop, stride) == starts


@pytest.mark.parametrize(
    ("height", "width", "long_side", "size"),
    [
        (375, 500, 512, (384, 512)),  # 512 / 500 * 375 = 384
        (500, 375, 473, (473, 355)),  # 473 / 500 * 375 = 354.75
        (100, 100, 50, (50, 50)),
        (5, 10, 5, (2, 5)),  # 2.5 rounds half to even, as Python's round in semseg
        (3, 400, 50, (1, 50)),  # never zero pixels
    ],
)
def test_scaled_size(height, width, long_side, size):
    assert scaled_size(height, width, long_side) == size


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_identity_logits_give_softmax_of_the_input(mode):
    # Each window's softmax at a pixel is the pixel's own softmax, whatever the window.
    image = random_image(13, 29)
    config = InferenceConfig(mode=mode, crop_size=(16, 10), flip=True)
    probs = predict_probs(Identity(), image, 3, config)
    torch.testing.assert_close(probs, image.softmax(dim=0))


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_changes_nothing_for_a_mirror_equivariant_model(mode):
    image = random_image(21, 26)
    base = InferenceConfig(mode=mode, crop_size=(12, 12), scales=(0.8, 1.2))
    flipped = predict_probs(Pointwise(), image, 4, base)
    plain = predict_probs(Pointwise(), image, 4, InferenceConfig(**{**vars(base), "flip": False}))
    torch.testing.assert_close(flipped, plain)


def test_flip_matters_for_a_model_that_is_not_mirror_equivariant():
    image = random_image(21, 26)
    with_flip = predict_probs(WindowDependent(), image, 4, InferenceConfig(crop_size=(12, 12)))
    without = predict_probs(
        WindowDependent(), image, 4, InferenceConfig(crop_size=(12, 12), flip=False)
    )
    assert (with_flip - without).abs().max() > 1e-3


def test_pspnet_probabilities_sum_to_one_and_labels_are_their_argmax():
    model, image = tiny_pspnet(), random_image(30, 45)
    config = InferenceConfig(crop_size=(25, 25), scales=(0.5, 1.0, 1.5), flip=True)
    raw = segment_tensor(Network.of(model), image, config, probs=True)
    assert raw.probs.shape == (3, 30, 45)
    torch.testing.assert_close(raw.probs.sum(dim=0), torch.ones(30, 45))
    assert torch.equal(raw.labels, raw.probs.argmax(dim=0))
    assert torch.equal(raw.confidence, raw.probs.max(dim=0).values)


def test_window_batch_does_not_change_the_result():
    model, image = tiny_pspnet(), random_image(30, 45)
    one = predict_probs(model, image, 3, InferenceConfig(crop_size=(17, 17), window_batch=1))
    many = predict_probs(model, image, 3, InferenceConfig(crop_size=(17, 17), window_batch=4))
    torch.testing.assert_close(one, many, atol=1e-5, rtol=0)


def test_progress_counts_every_window_of_every_scale():
    calls = []
    config = InferenceConfig(crop_size=(10, 10), stride_rate=0.5, scales=(1.0, 2.0), window_batch=2)
    predict_probs(Pointwise(), random_image(10, 15), 4, config, lambda *a: calls.append(a))
    # scale 1: 10 x 15, stride 5 -> 1 x 2 windows; scale 2: 20 x 30 -> 3 x 5 windows.
    total = 1 * 2 + 3 * 5
    assert calls[-1] == (total, total)
    assert len(calls) == 1 + math.ceil(15 / 2)
    assert all(total_ == total for _, total_ in calls)


def test_result_is_an_ordinary_tensor_callers_can_update():
    probs = predict_probs(Pointwise(), random_image(8, 8), 4, InferenceConfig(crop_size=(8, 8)))
    assert not probs.is_inference()
    probs /= 2


def test_training_mode_and_wrong_class_count_raise():
    with pytest.raises(ValueError, match="eval"):
        Network.of(PSPNet(3, backbone="resnet18", base_width=4))
    with pytest.raises(ValueError, match="num_classes"):
        predict_probs(Pointwise(4), random_image(16, 16), 5, InferenceConfig(crop_size=(8, 8)))


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "tiles"},
        {"stride_rate": 0},
        {"scales": ()},
        {"crop_size": (0, 4)},
        {"window_batch": 0},
    ],
)
def test_invalid_config_raises(options):
    with pytest.raises(ValueError):
        InferenceConfig(**options)


def test_windows_that_fit_the_free_memory():
    gib = 2**30
    assert windows_that_fit(10 * gib, 1 * gib) == 8  # 80% of 10 GiB
    assert windows_that_fit(100 * gib, 1 * gib) == 16  # capped
    assert windows_that_fit(1 * gib, 3 * gib) == 1  # never none
    assert windows_that_fit(10 * gib, 0) == 16


def test_window_batch_is_the_config_s_off_cuda():
    config = InferenceConfig(mode="slide", crop_size=(16, 16), window_batch=3)
    model = PSPNet(3, backbone="resnet18", base_width=4).eval()
    assert fit_window_batch(Network.of(model), config) == 3


def test_an_image_s_memory_grows_with_its_pixels_and_classes_and_bounds_the_pixels():
    from pspnet.inference.memory import PHASE_BYTES, image_memory, pixels_within

    def memory(classes, **options):
        model = PSPNet(classes, backbone="resnet18", base_width=8).eval()
        return image_memory(Network.of(model), InferenceConfig(**options))

    fixed, per_pixel = memory(19)  # slide: the windows' activations are fixed
    assert fixed > 0 and per_pixel >= max(PHASE_BYTES.values())
    assert memory(150)[1] > per_pixel  # more classes, more stride logits per pixel
    assert memory(19, flip=False)[1] < per_pixel
    whole_fixed, whole_per_pixel = memory(19, mode="whole")
    assert whole_fixed == 0 and whole_per_pixel > per_pixel  # the network sees the whole image
    base_fixed, base_per_pixel = memory(19, mode="whole", base_size=512)
    assert base_fixed > 0 and base_per_pixel < whole_per_pixel  # scaled to 512: fixed cost
    model = PSPNet(19, backbone="resnet18", base_width=8).eval()
    config = InferenceConfig()
    pixels = pixels_within(2**30, Network.of(model), config)
    assert fixed + per_pixel * pixels <= 2**30 < fixed + per_pixel * (pixels + 1)
    assert pixels_within(1, Network.of(model), config) == 1
