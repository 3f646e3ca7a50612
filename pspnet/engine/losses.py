"""The training criterion, kept outside the model so the model stays exportable."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pspnet.data.presets import IGNORE_INDEX


class SegmentationLoss:
    """Cross-entropy on the main logits plus ``aux_weight`` x cross-entropy on the aux logits.

    The paper weighs the auxiliary (layer3) loss by 0.4 (section 3.4, table 3); 0 turns it off.

    Each cross-entropy is a weighted mean over the scored pixels, normalised as
    ``F.cross_entropy(weight=class_weights)`` is: sum of ``w[y] * -log p(y)`` over the sum of
    ``w[y]`` (``w`` = 1 without class weights). Without OHEM the scored pixels are the labelled
    ones. With OHEM (``ohem_thresh`` set) they are the hard ones, by mmsegmentation's
    OHEMPixelSampler rule: with ``p`` the softmax probability of the true class in the main
    logits, keep the labelled pixels with ``p < max(ohem_thresh, t)``, ``t`` being the
    ``ohem_min_kept``-th smallest ``p`` of the batch, so at least the ``ohem_min_kept`` hardest
    pixels count (every labelled pixel when there are fewer). Two details differ from
    mmsegmentation: ``ohem_min_kept`` counts pixels of the whole (global) batch, not of each
    image, and the pixel at ``t`` itself is kept (``p <= t``), so ties never keep fewer.
    The choice is made once per batch, without gradient, and the aux loss scores the same
    pixels.

    Under ``torch.distributed`` with more than one rank the call is collective (every rank
    must make it): ``t`` is taken over the global batch and the denominator is the global
    one, and each rank's loss is multiplied by the world size because DDP averages gradients
    over ranks. The mean of the ranks' losses, and the averaged gradients, are then those of
    one process on the whole batch. The returned parts are this rank's (scaled) values.

    Args:
        aux_weight: weight of the auxiliary loss.
        ignore_index: label value that contributes no loss.
        class_weights: (C,) weight of each class, finite and >= 0; None weighs all alike.
        ohem_thresh: in (0, 1]; score only pixels whose true-class probability is below it
            (and the ``ohem_min_kept`` hardest); None turns OHEM off.
        ohem_min_kept: with ``ohem_thresh``, the fewest pixels scored per (global) batch.
    """

    def __init__(
        self,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        class_weights: torch.Tensor | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 100_000,
    ):
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
            if class_weights.dim() != 1:
                raise ValueError(
                    f"class_weights must be 1-D (one weight per class), got shape "
                    f"{tuple(class_weights.shape)}"
                )
            if not (class_weights.isfinite().all() and (class_weights >= 0).all()):
                raise ValueError(
                    f"class_weights must be finite and >= 0, got {class_weights.tolist()}"
                )
        if ohem_thresh is not None and not 0 < ohem_thresh <= 1:
            raise ValueError(f"ohem_thresh must be in (0, 1], got {ohem_thresh}")
        if not isinstance(ohem_min_kept, int) or ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be an integer >= 0, got {ohem_min_kept!r}")
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.class_weights = class_weights
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept

    def __call__(
        self, outputs: tuple[torch.Tensor, torch.Tensor | None], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts, from the model's train-mode ``(logits, aux_logits)``.

        Args:
            outputs: logits (N, C, H, W) and aux logits (N, C, H, W) or None; bf16 logits
                (autocast) are scored in float32.
            target: class indices (N, H, W), ``ignore_index`` where unlabelled.

        Returns:
            The total loss and its detached parts: ``loss``, ``loss_main``, ``loss_aux``
            (when the aux logits count) and, with OHEM, ``ohem_kept``, the fraction of the
            (global) batch's labelled pixels that were scored.
        """
        logits, aux = outputs
        logits = logits.float()  # (N, C, H, W)
        weights = self._weights(logits.shape[1], logits.device)  # (C,) or None
        labelled = target != self.ignore_index  # (N, H, W)
        kept = labelled if self.ohem_thresh is None else self._hardest(logits, target, labelled)
        scored = target.masked_fill(~kept, self.ignore_index)  # (N, H, W)
        with torch.no_grad():
            denominator = kept.sum() if weights is None else weights[target[kept]].sum()
            totals = _sum_over_ranks([denominator, kept.sum(), labelled.sum()])  # (3,)
        # A batch with nothing to score (every pixel ignored, or OHEM keeping none) weighs 0.
        denominator = totals[0].to(logits.dtype).clamp_min(torch.finfo(logits.dtype).tiny)

        def mean(x: torch.Tensor) -> torch.Tensor:
            nll = F.cross_entropy(
                x.float(), scored, weight=weights, ignore_index=self.ignore_index, reduction="sum"
            )
            return nll / denominator * _world_size()  # DDP averages the ranks' gradients

        main = mean(logits)
        parts = {"loss_main": main.detach()}
        total = main
        if aux is not None and self.aux_weight > 0:
            aux_loss = mean(aux)
            parts["loss_aux"] = aux_loss.detach()
            total = main + self.aux_weight * aux_loss
        if self.ohem_thresh is not None:
            parts["ohem_kept"] = (totals[1] / totals[2]).float()
        parts["loss"] = total.detach()
        return total, parts

    def _weights(self, classes: int, device: torch.device) -> torch.Tensor | None:
        """The class weights on ``device``, checked against the logits' class count."""
        if self.class_weights is None:
            return None
        if len(self.class_weights) != classes:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} weights but the logits have "
                f"{classes} classes"
            )
        if self.class_weights.device != device:
            self.class_weights = self.class_weights.to(device)
        return self.class_weights

    @torch.no_grad()
    def _hardest(
        self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        """The OHEM mask (N, H, W): labelled pixels with ``p < thresh`` or ``p <= t``."""
        index = target.masked_fill(~labelled, 0)[:, None]  # (N, 1, H, W)
        p = logits.softmax(1).gather(1, index)[:, 0]  # (N, H, W) true-class probability
        hard = p < self.ohem_thresh
        if self.ohem_min_kept > 0:
            unlabelled_last = p.masked_fill(~labelled, float("inf")).flatten()  # (N * H * W,)
            hard |= p <= _kth_smallest(unlabelled_last, self.ohem_min_kept)
        return labelled & hard


def _world_size() -> int:
    """The number of ranks sharing the batch: 1 unless a process group is initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_ranks(values: list[torch.Tensor]) -> torch.Tensor:
    """The scalars ``values`` summed over every rank, as one float64 (exact counts) tensor."""
    values = torch.stack([v.double() for v in values])
    if _world_size() > 1:
        dist.all_reduce(values)
    return values


def _kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest of ``values`` (M,) over every rank's (inf if fewer are finite).

    Each rank sends only its own ``k`` smallest, padded with inf to ``k`` so every rank
    sends the same length: the global ``k`` smallest are among them.
    """
    smallest = values.topk(min(k, values.numel()), largest=False).values  # (<= k,)
    pool = F.pad(smallest, (0, k - smallest.numel()), value=float("inf"))  # (k,)
    if _world_size() > 1:
        gathered = [torch.empty_like(pool) for _ in range(_world_size())]
        dist.all_gather(gathered, pool)
        pool = torch.cat(gathered)  # (world_size * k,)
    return pool.kthvalue(k).values
