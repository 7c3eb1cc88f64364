"""Image-level automatic mask generation: prompt SAM with a point grid and keep the good, distinct masks.

For every crop (the whole image, then optional layers of overlapping crops) the crop is embedded on its
own, a grid of single foreground points is decoded in batches with three masks per point, and candidates
are filtered by predicted IoU, by stability (IoU of the mask thresholded at ``±offset`` around 0, on the
crop-resolution logits) and by touching an inner crop edge. Box NMS runs per crop, then across crops
(smaller crops win), then an optional small-region clean-up. Every step keeps the official order of
records, so outputs compare record by record with the reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from rsvit.models.promptable.crops import build_all_layer_point_grids, generate_crop_boxes
from rsvit.models.promptable.mask_ops import (
    batched_mask_to_box,
    mask_to_rle,
    remove_small_regions,
    stability_score,
)
from rsvit.models.promptable.predictor import SamPredictor
from rsvit.models.promptable.sam import Sam

__all__ = ["SamAutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle")
EDGE_TOLERANCE = 20.0


@dataclass
class _Candidates:
    """Masks of one or more crops with their per-record tensors (boxes and points in image pixels)."""

    masks: list[Tensor] = field(default_factory=list)  # bool, full image frame
    boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    iou: Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: Tensor = field(default_factory=lambda: torch.zeros(0))
    points: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    crop_boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.masks)

    def select(self, index: Tensor) -> _Candidates:
        """Records at ``index`` (an index tensor, in its order)."""
        order = index.tolist()
        return _Candidates(
            masks=[self.masks[i] for i in order],
            boxes=self.boxes[index],
            iou=self.iou[index],
            stability=self.stability[index],
            points=self.points[index],
            crop_boxes=self.crop_boxes[index],
        )

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        if not parts:
            return _Candidates()
        return _Candidates(
            masks=[m for p in parts for m in p.masks],
            boxes=torch.cat([p.boxes for p in parts]),
            iou=torch.cat([p.iou for p in parts]),
            stability=torch.cat([p.stability for p in parts]),
            points=torch.cat([p.points for p in parts]),
            crop_boxes=torch.cat([p.crop_boxes for p in parts]),
        )


class SamAutomaticMaskGenerator:
    """Masks for everything in an image, without prompts.

    Args:
        model: the SAM model.
        points_per_side: grid side of crop layer 0 (ignored when ``point_grids`` is given).
        points_per_batch: points decoded together (memory vs. speed).
        pred_iou_thresh: keep masks whose predicted IoU is strictly above (0 disables).
        stability_score_thresh: keep masks whose stability is at least this (0 disables).
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: box IoU threshold of the NMS inside each crop.
        crop_n_layers: layers of overlapping crops beyond the whole image.
        crop_nms_thresh: box IoU threshold of the NMS across crops.
        crop_overlap_ratio: crop overlap as a fraction of the short image side (layer 1).
        crop_n_points_downscale_factor: grid side divided by this per crop layer.
        point_grids: explicit normalised ``(n, 2)`` grids, one per crop layer.
        min_mask_region_area: fill holes and drop islands smaller than this many pixels (0 disables).
        output_mode: ``"binary_mask"`` (bool array) or ``"uncompressed_rle"``.
        encoder_dtype: autocast dtype of the image encoder (see :class:`SamPredictor`).
        bands: 0-based bands of the input image the model sees (see :class:`SamPredictor`).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        encoder_dtype: torch.dtype | None = None,
        bands: Sequence[int] | None = None,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if point_grids is None:
            point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        if len(point_grids) != crop_n_layers + 1:
            raise ValueError(
                f"need {crop_n_layers + 1} point grids (one per crop layer), got {len(point_grids)}"
            )
        self.predictor = SamPredictor(model, encoder_dtype=encoder_dtype, bands=bands)
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.no_grad()
    def generate(self, image: np.ndarray, trace: list | None = None) -> list[dict]:
        """Records for an ``(H, W, 3)`` uint8 RGB image, in the official output order.

        Each record: ``segmentation`` (bool ``(H, W)`` or RLE), ``area``, ``bbox`` (XYWH, inclusive
        maxima so a one-pixel-wide mask has width 0), ``predicted_iou``, ``point_coords`` ``[[x, y]]``,
        ``stability_score``, ``crop_box`` (XYWH). ``trace``, if given, receives the candidate counts after
        every filter (the layout of the reference fixture's ``amg_filter_trace``).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
        log = trace if trace is not None else []
        data = self._generate_masks(image, log)
        if self.min_mask_region_area > 0 and len(data):
            data = self._remove_small_regions(data, log)
        return self._records(data)

    def _generate_masks(self, image: np.ndarray, log: list) -> _Candidates:
        size = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        data = _Candidates.concat(
            [
                self._process_crop(image, box, layer, log)
                for box, layer in zip(crop_boxes, layers, strict=True)
            ]
        )
        if len(crop_boxes) > 1:
            area = (data.crop_boxes[:, 2] - data.crop_boxes[:, 0]) * (
                data.crop_boxes[:, 3] - data.crop_boxes[:, 1]
            )
            keep = self._nms(data.boxes, 1 / area, self.crop_nms_thresh, log)
            data = data.select(keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, log: list) -> _Candidates:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        parts = [
            self._process_batch(
                points[i : i + self.points_per_batch], crop_size, crop_box, image.shape[:2], log
            )
            for i in range(0, len(points), self.points_per_batch)
        ]
        self.predictor.reset_image()
        boxes = torch.cat([p[1] for p in parts])
        iou = torch.cat([p[2] for p in parts])
        keep = self._nms(boxes, iou, self.box_nms_thresh, log)
        masks = torch.cat([p[0] for p in parts])[keep]
        offset = torch.tensor([x0, y0, x0, y0])
        return _Candidates(
            masks=[_paste(m, crop_box, image.shape[:2]) for m in masks],
            boxes=boxes[keep] + offset,
            iou=iou[keep],
            stability=torch.cat([p[3] for p in parts])[keep],
            points=torch.cat([p[4] for p in parts])[keep] + offset[:2],
            crop_boxes=torch.tensor([crop_box] * len(keep), dtype=torch.int64).reshape(-1, 4),
        )

    def _process_batch(
        self,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        image_size: tuple[int, int],
        log: list,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Crop-frame masks, crop-frame boxes, IoU, stability and crop-frame points of the kept candidates."""
        device = self.predictor.device
        coords = torch.as_tensor(self.predictor.transform.apply_coords(points, crop_size), device=device)
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int32, device=device)
        logits, iou, _ = self.predictor.predict_torch(coords[:, None], labels, return_logits=True)
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        pts = torch.as_tensor(np.repeat(points, logits.shape[0] // len(points), axis=0), device=device)
        if self.pred_iou_thresh > 0:
            keep = iou > self.pred_iou_thresh
            logits, iou, pts = logits[keep], iou[keep], pts[keep]
        log.append(["after_iou_filter", len(iou)])
        threshold = self.predictor.model.mask_threshold
        stability = stability_score(logits, threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0:
            keep = stability >= self.stability_score_thresh
            logits, iou, pts, stability = logits[keep], iou[keep], pts[keep], stability[keep]
        log.append(["after_stability_filter", len(iou)])
        masks = logits > threshold
        boxes = batched_mask_to_box(masks)
        keep = ~_near_crop_edge(boxes, crop_box, [0, 0, image_size[1], image_size[0]])
        log.append(["after_edge_filter", int(keep.sum())])
        # The kept candidates continue on the CPU (NMS, pasting, region clean-up).
        return tuple(t[keep].cpu() for t in (masks, boxes, iou, stability, pts))

    @staticmethod
    def _nms(boxes: Tensor, scores: Tensor, threshold: float, log: list) -> Tensor:
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(boxes), dtype=torch.int64), threshold)
        log.append(["nms", len(boxes), len(keep), threshold])
        return keep

    def _remove_small_regions(self, data: _Candidates, log: list) -> _Candidates:
        """Fill small holes and drop small islands; unchanged masks win the NMS that follows."""
        log.append(["postprocess_small_regions_in", len(data)])
        new_masks, scores = [], []
        for mask in data.masks:
            arr = mask.numpy()
            arr, filled = remove_small_regions(arr, self.min_mask_region_area, "holes")
            arr, dropped = remove_small_regions(arr, self.min_mask_region_area, "islands")
            new_masks.append(torch.from_numpy(np.ascontiguousarray(arr)))
            scores.append(float(not (filled or dropped)))
        boxes = torch.stack([batched_mask_to_box(m) for m in new_masks])
        thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        keep = batched_nms(
            boxes.float(), torch.tensor(scores), torch.zeros(len(boxes), dtype=torch.int64), thresh
        )
        log.append(["nms_postprocess", len(boxes), len(keep), thresh])
        data = _Candidates(
            masks=list(data.masks),
            boxes=data.boxes.clone(),
            iou=data.iou,
            stability=data.stability,
            points=data.points,
            crop_boxes=data.crop_boxes,
        )
        for i in keep.tolist():
            if scores[i] == 0.0:
                data.masks[i] = new_masks[i]
                data.boxes[i] = boxes[i]
                log.append(["pp_rle_recomputed_for_changed_mask", 1])
        data = data.select(keep)
        log.append(["postprocess_small_regions_out", len(data)])
        return data

    def _records(self, data: _Candidates) -> list[dict]:
        records = []
        for i, mask in enumerate(data.masks):
            x0, y0, x1, y1 = data.boxes[i].tolist()
            cx0, cy0, cx1, cy1 = data.crop_boxes[i].tolist()
            records.append(
                {
                    "segmentation": mask.numpy() if self.output_mode == "binary_mask" else mask_to_rle(mask),
                    "area": int(mask.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": data.iou[i].item(),
                    "point_coords": [data.points[i].tolist()],
                    "stability_score": data.stability[i].item(),
                    "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                }
            )
        return records


def _near_crop_edge(boxes: Tensor, crop_box: list[int], image_box: list[int]) -> Tensor:
    """Boxes (crop frame) within 20 px of an edge of the crop that is not also an image edge."""
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor(image_box, dtype=torch.float32, device=boxes.device)
    boxes = (boxes + torch.tensor([crop_box[0], crop_box[1]] * 2, device=boxes.device)).float()
    near_crop = torch.isclose(boxes, crop[None], atol=EDGE_TOLERANCE, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=EDGE_TOLERANCE, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def _paste(mask: Tensor, crop_box: list[int], image_size: tuple[int, int]) -> Tensor:
    """A crop-frame mask placed into an all-false mask of the whole image."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, image_size[1], image_size[0]):
        return mask
    out = torch.zeros(image_size, dtype=torch.bool)
    out[y0:y1, x0:x1] = mask
    return out
