"""Image-level promptable prediction: embed an image once, then answer any number of prompts.

Prompts are given in pixels of the original image (x, y); the predictor maps them into the model's
input frame, runs the prompt encoder and mask decoder against the cached embedding and returns masks at
the original resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor

from rsvit.models.promptable.bands import check_bands, select_bands
from rsvit.models.promptable.sam import Sam
from rsvit.models.promptable.transforms import ResizeLongestSide
from rsvit.structures.prompts import Prompt, check_boxes

__all__ = ["MASK_PROMPT_LOGIT", "SamPredictor"]

MASK_PROMPT_LOGIT = 10.0  # |logit| given to a binary mask prompt: well inside SAM's usual -20..20 range


class SamPredictor:
    """Stateful predictor around a :class:`Sam` model (``set_image`` once, ``predict`` many times).

    Args:
        model: the SAM model.
        encoder_dtype: run the image encoder under autocast with this dtype (e.g. ``torch.bfloat16``,
            several times faster on CPUs with bf16 instructions); the embedding is cast back to float32
            and the prompt side always runs in float32. ``None`` keeps float32 throughout.
        bands: 0-based bands of the images given to :meth:`set_image` that the model sees, in order (e.g.
            ``(3, 0, 1)`` for NIR-R-G out of an RGBN raster); ``None`` passes images through unchanged.
            See :mod:`rsvit.models.promptable.bands` for adapting a model to more bands instead.
    """

    def __init__(
        self, model: Sam, encoder_dtype: torch.dtype | None = None, bands: Sequence[int] | None = None
    ) -> None:
        if encoder_dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"encoder_dtype must be None, float32, bfloat16 or float16, got {encoder_dtype}")
        self.model = model
        self.bands = (
            None if bands is None else check_bands(bands, max(bands, default=0) + 1, self.model_bands)
        )
        self.encoder_dtype = None if encoder_dtype == torch.float32 else encoder_dtype
        self.transform = ResizeLongestSide(model.img_size)
        self.reset_image()

    @property
    def model_bands(self) -> int:
        """Bands the model takes."""
        return int(self.model.pixel_mean.shape[0])

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.features: Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Resize (Pillow bilinear), normalise, pad and embed an ``(H, W, bands)`` uint8 image.

        ``image_format="BGR"`` reverses the band order first (images read with OpenCV). With ``bands``
        set on the predictor, those bands are taken first.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"expected an (H, W, bands) image, got shape {image.shape}")
        if self.bands is not None:
            image = select_bands(image, self.bands)
        if image.shape[2] != self.model_bands:
            raise ValueError(
                f"the model takes {self.model_bands} bands, the image has {image.shape[2]}; pass "
                f"bands=(...) with {self.model_bands} 0-based band indices to SamPredictor, or adapt the "
                "model with rsvit.models.promptable.adapt_sam_in_chans"
            )
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        resized = self.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: Tensor, original_size: tuple[int, int]) -> None:
        """Embed an already resized ``(1, 3, h, w)`` image (0-255) whose long side equals the model input."""
        if transformed_image.ndim != 4 or max(transformed_image.shape[-2:]) != self.model.img_size:
            raise ValueError(
                f"expected a (1, C, h, w) image with long side {self.model.img_size}, got "
                f"{tuple(transformed_image.shape)}; use set_image for raw images"
            )
        self.reset_image()
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        x = self.model.preprocess(transformed_image)
        autocast = (
            torch.autocast(self.device.type, dtype=self.encoder_dtype)
            if self.encoder_dtype is not None
            else nullcontext()
        )
        with autocast:
            features = self.model.image_encoder(x)
        self.features = features.float()

    def get_image_embedding(self) -> Tensor:
        """The cached ``(1, C, g, g)`` embedding of the current image."""
        return self._require_image()

    def _require_image(self) -> Tensor:
        if self.features is None:
            raise RuntimeError("no image set: call set_image(image) before predicting")
        return self.features

    @torch.no_grad()
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt in original-image pixels.

        Args:
            point_coords: ``(N, 2)`` points (x, y).
            point_labels: ``(N,)`` labels, 1 foreground, 0 background.
            box: ``(4,)`` x0, y0, x1, y1.
            mask_input: ``(1, 4g, 4g)`` low-res logits of an earlier prediction.
            multimask_output: three candidate masks (ambiguous prompts) instead of one.
            return_logits: logits instead of boolean masks.

        Returns:
            masks ``(K, H, W)``, IoU predictions ``(K,)``, low-res logits ``(K, 4g, 4g)`` (numpy).
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            point_coords = np.asarray(point_coords)
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords (1 foreground, 0 background)")
            point_labels = np.asarray(point_labels)
            if (
                point_coords.ndim != 2
                or point_coords.shape[1] != 2
                or point_labels.shape != point_coords.shape[:1]
            ):
                raise ValueError(
                    f"point_coords must be (N, 2) with point_labels (N,), got {point_coords.shape} and "
                    f"{point_labels.shape}"
                )
            coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None]
            labels_t = torch.as_tensor(point_labels, dtype=torch.int32, device=self.device)[None]
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(-1)
            check_boxes(box.reshape(1, 4))
            box_t = torch.as_tensor(
                self.transform.apply_boxes(box, self.original_size), dtype=torch.float32, device=self.device
            )
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32, device=self.device)[None]
            expected = (1, 1, *self.model.prompt_encoder.mask_input_size)
            if tuple(mask_t.shape) != expected:
                raise ValueError(
                    f"mask_input must be {expected[1:]} low-res logits (e.g. an earlier prediction's third "
                    f"output), got {tuple(mask_t.shape[1:])}"
                )
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    def mask_input_from_mask(self, mask: np.ndarray) -> np.ndarray:
        """Low-res ``(1, 4g, 4g)`` mask-prompt logits from a boolean mask of the current image.

        The mask goes through the image's own geometry (longest-side resize, padding to ``S x S``, area
        downsampling to ``4g``), and the covered fraction ``p`` of each low-res cell becomes the logit
        ``MASK_PROMPT_LOGIT * (2p - 1)``, so cells inside are positive and cells outside negative.
        """
        self._require_image()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.original_size:
            raise ValueError(
                f"mask prompt of shape {mask.shape} does not match the image {self.original_size}"
            )
        size = self.model.img_size
        m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
        m = torch.nn.functional.interpolate(m, self.input_size, mode="bilinear", align_corners=False)
        m = torch.nn.functional.pad(m, (0, size - self.input_size[1], 0, size - self.input_size[0]))
        m = torch.nn.functional.interpolate(m, self.model.prompt_encoder.mask_input_size, mode="area")
        return (MASK_PROMPT_LOGIT * (2 * m[0] - 1)).numpy()

    def predict_prompt(
        self, prompt: Prompt, multimask_output: bool | None = None, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for a :class:`rsvit.structures.prompts.Prompt` (pixels of the current image).

        ``multimask_output`` defaults to True for a single point (an ambiguous prompt) and False otherwise,
        the usage the SAM authors recommend.
        """
        if prompt.points is None and prompt.box is None and prompt.mask is None:
            raise ValueError(f"prompt {prompt.prompt_id!r} is empty: it has no points, box or mask")
        if multimask_output is None:
            multimask_output = prompt.box is None and prompt.mask is None and len(prompt.points) == 1
        return self.predict(
            point_coords=prompt.points,
            point_labels=prompt.labels,
            box=prompt.box,
            mask_input=None if prompt.mask is None else self.mask_input_from_mask(prompt.mask),
            multimask_output=multimask_output,
            return_logits=return_logits,
        )

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched prompts already in the input frame (see :meth:`ResizeLongestSide.apply_boxes_torch`).

        Args:
            point_coords: ``(B, N, 2)``. All ``B`` prompts share the cached embedding.
            point_labels: ``(B, N)``, 1 foreground, 0 background.
            boxes: ``(B, 4)``.
            mask_input: ``(B, 1, 4g, 4g)`` low-res logits of an earlier prediction.
            multimask_output: three candidate masks (ambiguous prompts) instead of one.
            return_logits: logits instead of boolean masks.

        Returns:
            masks ``(B, K, H, W)`` (bool unless ``return_logits``), IoU ``(B, K)``, low-res logits
            ``(B, K, 4g, 4g)``.
        """
        features = self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            features, self.model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res
