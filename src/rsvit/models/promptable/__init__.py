"""Promptable segmentation: Segment Anything (image encoder from timm, prompt encoder and decoder ours).

>>> from rsvit.models.promptable import SamPredictor, load_official_sam   # doctest: +SKIP
>>> predictor = SamPredictor(load_official_sam("sam_vit_b_01ec64.pth"))   # doctest: +SKIP
>>> predictor.set_image(rgb_uint8)                                        # doctest: +SKIP
>>> masks, scores, low_res = predictor.predict(point_coords=[[120, 80]], point_labels=[1])  # doctest: +SKIP

Prompts from vector files (points, boxes, mask prompts, scribbles; any CRS, reprojected to the raster's) are
read by :func:`rsvit.structures.prompts.read_prompts` and answered with ``SamPredictor.predict_prompt``.
Multispectral rasters: ``SamPredictor(model, bands=(3, 0, 1))`` picks three bands, and
:func:`adapt_sam_in_chans` widens the patch embedding to N bands (a starting point for fine-tuning).
``encoder_dtype=torch.bfloat16`` runs the image encoder under bf16 autocast.
"""

from rsvit.models.promptable.automatic import SamAutomaticMaskGenerator
from rsvit.models.promptable.bands import adapt_sam_in_chans, select_bands
from rsvit.models.promptable.checkpoint import infer_sam_variant, load_official_sam
from rsvit.models.promptable.convert import convert_official_sam_state_dict
from rsvit.models.promptable.image_encoder import SamImageEncoder
from rsvit.models.promptable.mask_decoder import MaskDecoder
from rsvit.models.promptable.predictor import SamPredictor
from rsvit.models.promptable.prompt_encoder import PromptEncoder
from rsvit.models.promptable.registration import SAM_BACKBONES, build_sam_from_spec
from rsvit.models.promptable.sam import SAM_VARIANTS, Sam, SamConfig, build_sam
from rsvit.models.promptable.two_way_transformer import TwoWayTransformer

__all__ = [
    "SAM_BACKBONES",
    "SAM_VARIANTS",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamImageEncoder",
    "SamPredictor",
    "TwoWayTransformer",
    "adapt_sam_in_chans",
    "build_sam",
    "build_sam_from_spec",
    "convert_official_sam_state_dict",
    "infer_sam_variant",
    "load_official_sam",
    "select_bands",
]
