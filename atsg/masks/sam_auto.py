"""SAM's automatic mask generation (a grid of point prompts), as masks that stay tensors.

It makes the masks the official ``SamAutomaticMaskGenerator`` makes without crop
layers (METHOD.md: none in the paper), through the same segment_anything model
calls, transforms and helpers, in the same order, so the masks are the same. The
published generator upsamples every one of the 3 x points_per_side^2 candidate
masks to 1024 px and back to the image size, and encodes the survivors as
run-length codes only to decode them again. Here:

- the predicted-IoU filter runs on the low-resolution logits, so only candidates
  that pass it are upsampled (upsampling is per mask, so the survivors are equal);
- kept masks stay one boolean tensor on the model's device until the box NMS;
- several images share one image-encoder call (``masks.batch_size``), optionally
  under autocast (``masks.encoder_precision``);
- the seconds spent inside the SAM modules (image encoder, prompt encoder, mask
  decoder) are counted when ``timed`` is on, to show the stage's overhead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batch_iterator, batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms

from ..timing import ModelClock

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class GridMaskGenerator:
    """Masks of whole images from a grid of point prompts (settings: the ``masks`` config section)."""

    def __init__(self, sam: Sam, cfg: Mapping, timed: bool = False):
        self.sam, self.cfg, self.timed = sam, cfg, timed
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.grid = build_point_grid(cfg["points_per_side"])
        self.precision = PRECISIONS[cfg["encoder_precision"]]
        self._model = ModelClock(self.device, timed)

    @property
    def model_seconds(self) -> float:
        return self._model.seconds

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray], native: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image embeddings (B, C, h, w) of equally sized (H, W, 3) uint8 images, and their input size.

        Each image goes through the predictor's own steps (resize of the longest side to the encoder's
        size, normalisation, padding); the encoder sees them as one batch. ``native``: no resize (images
        no larger than the encoder's input, e.g. scene windows), only the padding.
        """
        inputs = np.stack(list(images) if native else [self.transform.apply_image(im) for im in images])
        x = torch.as_tensor(inputs, device=self.device).permute(0, 3, 1, 2).contiguous()
        input_size = tuple(x.shape[-2:])
        x = self.sam.preprocess(x)
        with torch.autocast(
            self.device.type, dtype=self.precision or torch.float32, enabled=self.precision is not None
        ):
            features = self._model(self.sam.image_encoder, x)
        return features.float(), input_size

    @torch.no_grad()
    def candidates(self, features: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]):
        """(low-resolution logits (n, h, w), predicted IoUs (n,)) of every candidate mask of one image, one batch
        of ``points_per_batch`` prompts (3 candidates each) at a time.

        The prompt grid spans the original image; its points are scaled as the image was (not at all
        when ``input_size`` is the original size).
        """
        sam = self.sam
        points = self.grid * np.array(original_size)[None, ::-1]
        for (batch,) in batch_iterator(self.cfg["points_per_batch"], points):
            if tuple(input_size) != tuple(original_size):
                batch = self.transform.apply_coords(batch, original_size)
            coords = torch.as_tensor(batch, device=self.device)
            labels = torch.ones(coords.shape[0], dtype=torch.int, device=self.device)
            sparse, dense = self._model(
                sam.prompt_encoder, points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None
            )
            low, iou = self._model(
                sam.mask_decoder,
                image_embeddings=features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            yield low.flatten(0, 1), iou.flatten(0, 1)

    @torch.no_grad()
    def masks(
        self, features: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """(K, H, W) bool masks of one image, in the order the official generator returns them."""
        c = self.cfg
        sam, threshold = self.sam, self.sam.mask_threshold
        kept, scores, boxes = [], [], []
        for low, iou in self.candidates(features, input_size, original_size):
            if c["pred_iou_thresh"] > 0.0:
                keep = iou > c["pred_iou_thresh"]
                low, iou = low[keep], iou[keep]
            if len(low) == 0:
                continue
            logits = sam.postprocess_masks(low[:, None], input_size, original_size)[:, 0]
            if c["stability_score_thresh"] > 0.0:
                keep = (
                    calculate_stability_score(logits, threshold, c["stability_score_offset"])
                    >= c["stability_score_thresh"]
                )
                logits, iou = logits[keep], iou[keep]
            masks = logits > threshold
            kept.append(masks)
            scores.append(iou)
            boxes.append(batched_mask_to_box(masks))
        if not kept:
            return torch.zeros((0, *original_size), dtype=torch.bool, device=self.device)
        masks, scores, boxes = torch.cat(kept), torch.cat(scores), torch.cat(boxes)
        order = batched_nms(boxes.float(), scores, torch.zeros(len(boxes), device=self.device), c["box_nms_thresh"])
        return masks[order]

    def generate(self, images: Sequence[np.ndarray], native: bool = False) -> list[np.ndarray]:
        """(K, H, W) bool numpy masks of each of equally sized (H, W, 3) uint8 images."""
        features, input_size = self.embed(images, native)
        return [
            self.masks(features[i : i + 1], input_size, images[i].shape[:2]).cpu().numpy() for i in range(len(images))
        ]
