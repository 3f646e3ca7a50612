"""The training criterion, kept outside the model so the model stays exportable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pspnet.data.presets import IGNORE_INDEX


class SegmentationLoss:
    """Cross-entropy on the main logits plus ``aux_weight`` x cross-entropy on the aux logits.

    The paper weighs the auxiliary (layer3) loss by 0.4 (section 3.4, table 3); 0 turns it off.

    Args:
        aux_weight: weight of the auxiliary loss.
        ignore_index: label value that contributes no loss.
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX):
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def __call__(
        self, outputs: tuple[torch.Tensor, torch.Tensor | None], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts, from the model's train-mode ``(logits, aux_logits)``.

        Args:
            outputs: logits (N, C, H, W) and aux logits (N, C, H, W) or None.
            target: class indices (N, H, W), ``ignore_index`` where unlabelled.
        """
        logits, aux = outputs
        main = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        parts = {"loss_main": main.detach()}
        total = main
        if aux is not None and self.aux_weight > 0:
            aux_loss = F.cross_entropy(aux.float(), target, ignore_index=self.ignore_index)
            parts["loss_aux"] = aux_loss.detach()
            total = main + self.aux_weight * aux_loss
        parts["loss"] = total.detach()
        return total, parts
