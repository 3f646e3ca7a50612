"""The head's 3x3 convolution with its pyramid half moved to bin resolution (exact).

The head's first layer is a 3x3 convolution over ``concat(features, up_1, ..., up_k)`` with
``up_i = upsample(branch_i)``, a bilinear upsampling of a ``bins x bins`` map. Convolution is
linear in its input, so it splits along input channels: ``conv_W(concat) = conv_W0(features)
+ sum_i conv_Wi(up_i)``. The feature half stays a convolution. For each pyramid half:

- a 3x3 convolution is a sum over its 9 taps of a 1x1 convolution ``W_i[:, :, dy, dx]``
  shifted by the tap's offset, zeros entering at the border (the zero padding);
- a 1x1 convolution (over channels) commutes with bilinear upsampling (over space), so it
  runs on the ``bins x bins`` map: ``z = W_i[:, :, dy, dx] @ branch_i``, 9 x 512 x 512
  multiply-adds per bin cell instead of per output pixel;
- upsampling is ``U_h @ z @ U_w^T`` with interpolation matrices ``U_h`` (H, bins) and ``U_w``
  (W, bins); shifting the upsampled map by ``dy`` rows with zero fill equals shifting the rows
  of ``U_h``, so each tap is ``S_dy(U_h) @ z_dy,dx @ S_dx(U_w)^T``.

The taps and branches then sum in two small matrix products per branch and one at full
resolution. For PSPNet-ResNet50 at 473 x 473 (60 x 60 features) the 4096-channel 3x3
convolution (136 GFLOPs) becomes a 2048-channel one (68 GFLOPs) plus about 0.4 GFLOPs; the
upsampled maps and the 4096-channel concatenation are never built.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.inference.optimized.fold import folded_parameters
from pspnet.models.pspnet import PSPNet, SegmentationHead
from pspnet.models.pyramid import PyramidPooling


def bilinear_matrix(
    out_size: int,
    in_size: int,
    align_corners: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(out_size, in_size) matrix ``U`` with ``U @ v`` the bilinear resize of ``v`` along one axis.

    Follows ``F.interpolate(mode="bilinear", size=...)`` (no antialiasing): the source
    coordinate of output ``i`` is ``i * (in - 1) / (out - 1)`` with ``align_corners`` (0 for
    a single output) and ``(i + 0.5) * in / out - 0.5`` clamped at 0 without; the two nearest
    inputs get weights ``1 - frac`` and ``frac``, the last input standing in for the one past
    the end. Sizes may be symbolic (torch.compile, export); only tensor ops touch the values.

    Args:
        out_size: length of the resized axis.
        in_size: length of the original axis.
        align_corners: as in ``F.interpolate``.
        dtype: of the returned matrix; the coordinates are computed in float64 first.
        device: of the returned matrix.
    """
    out_index = torch.arange(out_size, dtype=torch.float64, device=device)
    if align_corners:
        # out - 1 read off the index itself (clamped for a single output, where it is 0): no
        # Python branch on a size, so a traced export stays right for every size.
        source = out_index * ((in_size - 1) / out_index[-1:].clamp(min=1))
    else:
        source = ((out_index + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    lower = source.floor().clamp(max=in_size - 1)  # (out,)
    upper_weight = (source - lower).clamp(0, 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    columns = torch.arange(in_size, dtype=torch.float64, device=device)  # (in,)
    zero = torch.zeros((), dtype=torch.float64, device=device)
    matrix = torch.where(columns == lower[:, None], 1 - upper_weight[:, None], zero)
    matrix = matrix + torch.where(columns == upper[:, None], upper_weight[:, None], zero)
    return matrix.to(dtype)  # (out, in)


def tap_matrices(
    out_size: int,
    in_size: int,
    align_corners: bool,
    *,
    taps: int,
    dilation: int,
    padding: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The bilinear matrix shifted for each tap of a convolution axis, side by side.

    Tap ``j`` of a stride-1 convolution reads input row ``y + j * dilation - padding`` of the
    upsampled map, or a zero outside it. That is row ``y`` of ``U`` shifted up by the tap's
    offset, with zero rows entering at the border.

    Args:
        out_size: the upsampled (and convolved) length.
        in_size: the bin count along this axis.
        align_corners: of the upsampling.
        taps: kernel size along this axis.
        dilation: of the convolution along this axis.
        padding: zero padding along this axis; ``2 * padding == dilation * (taps - 1)``.
        dtype: of the returned matrix.
        device: of the returned matrix.

    Returns:
        (out_size, taps * in_size); column ``j * in_size + p`` is tap ``j``'s weight of bin ``p``.
    """
    matrix = bilinear_matrix(out_size, in_size, align_corners, dtype, device)  # (out, in)
    padded = F.pad(matrix, (0, 0, padding, padding))  # (out + 2 * padding, in)
    shifted = [padded[j * dilation : j * dilation + out_size] for j in range(taps)]
    return torch.cat(shifted, dim=1)  # (out, taps * in)


class FactorizedHead(nn.Module):
    """PSPNet's pyramid pooling and head with the pyramid half of the 3x3 conv at bin size.

    Maps features (N, C, H, W) to logits (N, classes, H, W) like ``head(ppm(features))`` of
    an eval-mode model, to float rounding. The head's BatchNorm is folded into the weights
    here (its running statistics, as in eval mode); the pyramid branches, the ReLU, dropout
    and classifier are the given modules, shared, not copied. Inference only.

    Args:
        ppm: the model's pyramid pooling, with or without reduction, any bins and pooling.
        head: the model's segmentation head; its ``fuse`` BatchNorm may already be folded
            (``nn.Identity`` with a conv bias, see :func:`.fold.fold_batchnorm`).
    """

    def __init__(self, ppm: PyramidPooling, head: SegmentationHead):
        super().__init__()
        conv = head.fuse.conv
        weight, bias = _fuse_parameters(conv, head.fuse.bn)  # (mid, C + k * Cb, kh, kw), (mid,)
        self.kernel_size, self.dilation, self.padding = _same_geometry(conv)
        feature_channels, branch_channels = _input_split(ppm, conv.in_channels)
        mid, taps = conv.out_channels, self.kernel_size[0] * self.kernel_size[1]
        self.features = nn.Conv2d(
            feature_channels, mid, self.kernel_size, padding=self.padding, dilation=self.dilation
        )
        self.features.weight = nn.Parameter(weight[:, :feature_channels].clone())
        self.features.bias = nn.Parameter(bias.clone())
        self.branches = ppm.branches
        self.align_corners = ppm.align_corners
        self.taps = nn.ModuleList()
        for first in range(feature_channels, conv.in_channels, branch_channels):
            # The 1x1 conv of every tap at once; output channel c * taps + t is tap t of c.
            tap_conv = nn.Conv2d(branch_channels, mid * taps, 1, bias=False)
            branch_weight = weight[:, first : first + branch_channels]  # (mid, Cb, kh, kw)
            tap_conv.weight = nn.Parameter(
                branch_weight.permute(0, 2, 3, 1).reshape(mid * taps, branch_channels, 1, 1).clone()
            )
            self.taps.append(tap_conv)
        self.relu = head.fuse.relu
        self.dropout = head.dropout
        self.classifier = head.classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        row_matrices, partial_sums = [], []
        for branch, tap_conv in zip(self.branches, self.taps):
            pooled = branch(features)  # (N, Cb, bh, bw)
            # At least fp32 from here on, also in a bf16 model: the interpolation weights and
            # the sums lose most to bf16 rounding and cost ~0.1% of the network's FLOPs.
            rows, columns = self._tap_matrices(height, width, pooled)  # (H, kh*bh), (W, kw*bw)
            taps = self._taps_at_bins(tap_conv, pooled).to(rows.dtype)  # (N, mid, kh*bh, kw*bw)
            row_matrices.append(rows)
            partial_sums.append(taps @ columns.T)  # (N, mid, kh*bh, W): over dx and q
        # Over dy, p and every branch in one product: (H, K) @ (N, mid, K, W) -> (N, mid, H, W)
        pyramid = torch.cat(row_matrices, dim=1) @ torch.cat(partial_sums, dim=2)
        fused = self.relu(self.features(features) + pyramid)  # (N, mid, H, W), >= fp32
        return self.classifier(self.dropout(fused))

    def _taps_at_bins(self, tap_conv: nn.Conv2d, pooled: torch.Tensor) -> torch.Tensor:
        """Every tap's 1x1 conv of a branch's bin map, laid out as (dy, p) x (dx, q) blocks."""
        (kh, kw), (bh, bw) = self.kernel_size, pooled.shape[-2:]
        taps = tap_conv(pooled)  # (N, mid * kh * kw, bh, bw)
        taps = taps.reshape(taps.shape[0], -1, kh, kw, bh, bw)  # (N, mid, kh, kw, bh, bw)
        taps = taps.permute(0, 1, 2, 4, 3, 5)  # (N, mid, kh, bh, kw, bw)
        return taps.reshape(taps.shape[0], taps.shape[1], kh * bh, kw * bw)

    def _tap_matrices(
        self, height: int, width: int, pooled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row (H, kh*bh) and column (W, kw*bw) matrices matching :meth:`_taps_at_bins`."""
        (kh, kw), (dh, dw), (ph, pw) = self.kernel_size, self.dilation, self.padding
        bh, bw = pooled.shape[-2:]
        dtype = torch.promote_types(pooled.dtype, torch.float32)  # fp32 for bf16, fp64 kept
        options = {"dtype": dtype, "device": pooled.device}
        rows = tap_matrices(
            height, bh, self.align_corners, taps=kh, dilation=dh, padding=ph, **options
        )
        columns = tap_matrices(
            width, bw, self.align_corners, taps=kw, dilation=dw, padding=pw, **options
        )
        return rows, columns


def factorize_head(model: PSPNet) -> PSPNet:
    """An inference-only copy of ``model`` whose head is a :class:`FactorizedHead`.

    The copy's ``ppm`` becomes ``nn.Identity`` and its ``head`` the factorized head, so it is
    called like the original and returns the same eval-mode logits to float rounding. A
    model without the pyramid (``use_ppm=False``), or one already factorized, is copied
    unchanged. Composes with :func:`pspnet.inference.optimized.fold.fold_batchnorm` in either order.

    Args:
        model: a PSPNet; it is not modified.

    Returns:
        A deep copy in eval mode with gradients off.
    """
    factorized = copy.deepcopy(model).eval().requires_grad_(False)
    if isinstance(factorized.ppm, PyramidPooling):
        factorized.head = FactorizedHead(factorized.ppm, factorized.head).requires_grad_(False)
        factorized.ppm = nn.Identity()
    return factorized


def _fuse_parameters(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))``: folded here, or already folded into the conv."""
    if isinstance(bn, nn.BatchNorm2d):
        return folded_parameters(conv, bn)
    if isinstance(bn, nn.Identity):
        bias = conv.bias if conv.bias is not None else torch.zeros_like(conv.weight[:, 0, 0, 0])
        return conv.weight.detach(), bias.detach()
    raise ValueError(f"head.fuse.bn must be BatchNorm2d or Identity (folded), got {bn}")


def _same_geometry(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Kernel size, dilation and padding of a conv that keeps the map's size."""
    kernel, dilation, padding = conv.kernel_size, conv.dilation, conv.padding
    keeps_size = all(2 * p == d * (k - 1) for k, d, p in zip(kernel, dilation, padding))
    if conv.stride != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" or not keeps_size:
        raise ValueError(
            f"FactorizedHead needs a stride-1, ungrouped, zero-padded conv that keeps the map's "
            f"size (PSPNet's 3x3, padding 1), got {conv}"
        )
    return tuple(kernel), tuple(dilation), tuple(padding)


def _input_split(ppm: PyramidPooling, in_channels: int) -> tuple[int, int]:
    """(feature channels C, channels per branch Cb) of the head's input ``C + k * Cb``."""
    count, first = len(ppm.branches), ppm.branches[0]
    if len(first) > 1:  # pool, then the reduction's ConvBNReLU
        feature_channels, branch_channels = first[1].conv.in_channels, first[1].conv.out_channels
    else:  # pool only: every branch keeps the feature channels
        feature_channels = branch_channels = in_channels // (count + 1)
    if feature_channels + count * branch_channels != in_channels:
        raise ValueError(
            f"the head's conv takes {in_channels} channels but the pyramid gives "
            f"{feature_channels} + {count} x {branch_channels}; ppm and head are not one model's"
        )
    return feature_channels, branch_channels
