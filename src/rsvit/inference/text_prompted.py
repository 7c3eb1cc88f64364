"""Text-prompted segmentation of a raster: candidate masks, scored against the text by CLIP on their crops.

Candidates come from one of two sources:

* **automatic** (default): SAM's automatic mask generator window by window over the whole raster, with the
  de-duplication across window overlaps of :mod:`rsvit.inference.automatic`;
* **boxes**: a GeoJSON file of boxes from an open-vocabulary detector (any CRS; polygons, their bounds are
  the box; ``label`` and ``score`` properties are carried to the output), each answered by SAM as a box
  prompt through :class:`~rsvit.inference.promptable.RasterSamPredictor`. rsvit runs no detector: run one
  (e.g. Grounding DINO) on the raster's pixels and turn its boxes into that file with
  :func:`detections_to_geojson`.

Every candidate's square crop (:func:`rsvit.models.clip.regions.region_crop`: the box grown by a margin,
background outside the mask blurred, greyed or kept) is read from the raster and scored by
:class:`~rsvit.models.clip.regions.RegionScorer` against the query and negative prompts. Regions whose
score (softmax probability of the query, or cosine similarity) reaches the threshold are kept, best first,
at most ``top_k``.

Outputs lie on the input's grid (CRS, transform, size) like those of the other SAM commands: a mask COG
(``"ids"``: the match's rank, 1 = best score, which wins where matches overlap; ``"binary"``: 1), 0 for
background and the dtype's maximum where the input is nodata; polygons carry ``value``, ``text``,
``score`` (the thresholded measure), ``probability``, ``cosine``, ``sam_score`` (SAM's predicted IoU),
``area_px``, ``area`` (CRS units squared) and ``source``, plus ``detector_label``/``detector_score``/
``box_id`` for detector boxes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvit.inference.automatic import raster_instances, window_grid
from rsvit.inference.promptable import (
    MaskCanvas,
    PolygonCollector,
    RasterSamPredictor,
    check_outputs,
    commit_outputs,
    open_promptable_model,
    progress_bar,
    to_uint8,
)
from rsvit.inference.reader import InputError, SceneReader
from rsvit.models.clip.loading import LoadedClip, load_clip
from rsvit.models.clip.regions import (
    BACKGROUNDS,
    DEFAULT_NEGATIVES,
    SCORES,
    RegionScorer,
    RegionScores,
    region_crop,
    select_regions,
    square_box,
)
from rsvit.models.promptable.automatic import SamAutomaticMaskGenerator
from rsvit.models.promptable.sam import Sam
from rsvit.structures.prompts import Prompt, load_geojson_features, pixel_to_map, read_prompts

__all__ = [
    "Region",
    "box_regions",
    "detections_to_geojson",
    "read_boxes",
    "region_crops",
    "text_segment_raster",
]

Box = tuple[int, int, int, int]


@dataclass
class Region:
    """A candidate mask in raster pixels: ``mask`` covers ``box`` ``(x0, y0, x1, y1)`` (maxima inclusive)."""

    box: Box
    mask: np.ndarray
    sam_score: float
    properties: dict[str, Any] = field(default_factory=dict)


def read_boxes(
    source: str | os.PathLike[str] | Mapping, reader: SceneReader, crs: Any = None
) -> list[tuple[Prompt, dict[str, Any]]]:
    """Box prompts in raster pixels from a detector's GeoJSON, each with its detector properties.

    Polygons become their bounding boxes (reprojected to the raster's CRS, as
    :func:`rsvit.structures.prompts.read_prompts` does); ``label`` and ``score`` properties are kept as
    ``detector_label`` / ``detector_score``, the feature's ``id`` (else its position) as ``box_id``.
    """
    features, file_crs, name = load_geojson_features(source)
    details: list[dict[str, Any]] = []
    renamed = []
    for index, feature in enumerate(features):
        geometry = (feature or {}).get("geometry") or {}
        props = (feature or {}).get("properties") or {}
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            raise ValueError(
                f"{name}, feature {index}: a {geometry.get('type') or 'missing'} geometry is not a box; "
                "give each detection as a Polygon (its bounds are the box)"
            )
        extra: dict[str, Any] = {"box_id": feature.get("id", props.get("id", index))}
        if "label" in props:
            extra["detector_label"] = props["label"]
        if "score" in props:
            extra["detector_score"] = props["score"]
        details.append(extra)
        renamed.append({"type": "Feature", "properties": {"rsvit_box": index}, "geometry": geometry})
    prompts = read_prompts(
        {"type": "FeatureCollection", "features": renamed},
        reader.transform,
        reader.crs,
        (reader.height, reader.width),
        crs=crs if crs is not None else file_crs,
        id_property="rsvit_box",
    )
    return [(prompt, details[int(prompt.prompt_id)]) for prompt in prompts]


def detections_to_geojson(
    boxes: np.ndarray | Sequence[Sequence[float]],
    transform: Any,
    crs: Any,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A detector's pixel boxes as the GeoJSON :func:`text_segment_raster` takes (``boxes=``).

    Args:
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in the raster's pixels (the convention of
            :mod:`rsvit.structures.prompts`: pixel centres at integers).
        transform: the raster's affine transform.
        crs: the raster's CRS; the collection names it, so no reprojection error creeps in.
        labels: optional class label per box (``label`` property).
        scores: optional detector confidence per box (``score`` property).
    """
    from rasterio.crs import CRS

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for what, values in (("labels", labels), ("scores", scores)):
        if values is not None and len(values) != len(boxes):
            raise ValueError(f"{len(values)} {what} for {len(boxes)} boxes")
    features = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        corners = pixel_to_map(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]), transform)
        props: dict[str, Any] = {}
        if labels is not None:
            props["label"] = labels[k]
        if scores is not None:
            props["score"] = float(scores[k])
        geometry = {"type": "Polygon", "coordinates": [corners.tolist()]}
        features.append({"type": "Feature", "id": k, "properties": props, "geometry": geometry})
    name = CRS.from_user_input(crs).to_string()
    return {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": name}},
        "features": features,
    }


def box_regions(
    engine: RasterSamPredictor, boxes: Sequence[tuple[Prompt, dict[str, Any]]], progress: bool = True
) -> tuple[list[Region], int]:
    """SAM's best mask for each box prompt (windows shared as in prompted segmentation); and the windows."""
    by_window: dict[tuple[int, int, int, int], list[int]] = {}
    for i, (prompt, _) in enumerate(boxes):
        by_window.setdefault(engine.window_of(prompt), []).append(i)
    regions: list[Region] = []
    with progress_bar(len(by_window), "boxes", progress) as bar:
        for win in sorted(by_window, key=lambda w: (w[1], w[0])):
            indices = by_window[win]
            results = engine.predict([boxes[i][0] for i in indices], win)
            for i, result in zip(indices, results, strict=True):
                rows, cols = np.nonzero(result.mask)
                if len(rows) == 0:
                    continue  # SAM found nothing in this box
                r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
                box = (int(c0) + win[0], int(r0) + win[1], int(c1) + win[0], int(r1) + win[1])
                mask = result.mask[r0 : r1 + 1, c0 : c1 + 1]
                regions.append(Region(box, mask, result.score, {"source": "boxes", **boxes[i][1]}))
            bar.update(1)
    return regions, len(by_window)


def region_crops(
    reader: SceneReader, regions: Sequence[Region], margin: float, background: str, size: int | None = None
) -> list[np.ndarray]:
    """The square crops CLIP scores, read from the raster (outside it: the fill colour)."""
    crops = []
    for region in regions:
        left, top, side = square_box(region.box, margin)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + side, reader.width), min(top + side, reader.height)
        image, valid = reader.read(y0, x0, y1 - y0, x1 - x0)
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        bx0, by0, bx1, by1 = region.box
        mask[by0 - y0 : by1 - y0 + 1, bx0 - x0 : bx1 - x0 + 1] = region.mask
        box = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)
        crops.append(
            region_crop(
                to_uint8(image), mask, box, margin=margin, background=background, valid=valid, size=size
            )
        )
    return crops


def _score_all(
    scorer: RegionScorer,
    reader: SceneReader,
    regions: Sequence[Region],
    margin: float,
    background: str,
    progress: bool,
) -> RegionScores:
    """Scores in batches, so only one batch of crops is held at a time."""
    probability, cosine = [], []
    step = scorer.batch_size
    with progress_bar(len(regions), "regions", progress, unit="region") as bar:
        for start in range(0, len(regions), step):
            batch = regions[start : start + step]
            scores = scorer.score(region_crops(reader, batch, margin, background, scorer.input_size))
            probability.append(scores.probability)
            cosine.append(scores.cosine)
            bar.update(len(batch))
    if not probability:
        return RegionScores(np.zeros(0), np.zeros(0))
    return RegionScores(np.concatenate(probability), np.concatenate(cosine))


def _write_matches(
    matches: list[tuple[Region, dict[str, Any]]],
    reader: SceneReader,
    output: Path,
    vector: Path | None,
    polygons: PolygonCollector | None,
    mode: str,
    text: str,
) -> int:
    """Paints the matches (best last, so it wins overlaps in ids mode) and publishes COG and polygons."""
    n = len(matches)
    dtype = "uint8" if mode == "binary" or n < 255 else "uint16" if n < 65535 else "uint32"
    canvas = MaskCanvas(reader, output, dtype)
    pixel_area = abs(reader.transform.a * reader.transform.e - reader.transform.b * reader.transform.d)

    def window(region: Region) -> tuple[int, int, int, int]:
        return region.box[0], region.box[1], region.mask.shape[1], region.mask.shape[0]

    try:
        for rank in range(n, 0, -1):
            region = matches[rank - 1][0]
            block = canvas.read(window(region))
            block[region.mask & (block != canvas.nodata)] = 1 if mode == "binary" else rank
            canvas.write(block, window(region))
        if polygons is not None:
            for rank, (region, props) in enumerate(matches, start=1):
                block = canvas.read(window(region))
                own = block == rank if mode == "ids" else region.mask & (block != canvas.nodata)
                area_px = int(own.sum())
                value = rank if mode == "ids" else 1
                properties = {"value": value, "rank": rank, "text": text, **props}
                properties.update(area_px=area_px, area=area_px * pixel_area)
                if area_px:
                    polygons.add(own, window(region), properties)
        if mode == "binary":
            categories: list[str] | None = ["background", text]
        else:
            categories = ["background", *(f"{text} {k}" for k in range(1, n + 1))] if n < 255 else None
        commit_outputs(canvas, categories, polygons, vector)
    except BaseException:
        canvas.discard()
        raise
    return 0 if polygons is None else len(polygons.features)


def text_segment_raster(
    model: str | os.PathLike[str] | Sam,
    clip: str | os.PathLike[str] | LoadedClip,
    input: str | os.PathLike[str],
    text: str,
    output: str | os.PathLike[str],
    *,
    vector: str | os.PathLike[str] | None = None,
    boxes: str | os.PathLike[str] | Mapping | None = None,
    box_crs: Any = None,
    clip_model: str = "auto",
    templates: str | Sequence[str] | None = None,
    negatives: Sequence[str] | None = None,
    averaging: str | None = None,
    logit_scale: str | float = "fixed",
    score: str = "probability",
    threshold: float | None = 0.5,
    top_k: int | None = None,
    margin: float = 0.1,
    background: str = "blur",
    bands: Sequence[int] | None = None,
    clip_bands: Sequence[int] | None = None,
    window: int | None = None,
    overlap: int | None = None,
    scale: float | None = None,
    automatic: Mapping[str, Any] | None = None,
    cache_size: int = 4,
    mode: str = "ids",
    batch_size: int = 32,
    encoder_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    runtime: str | None = None,
    vector_crs: str = "EPSG:4326",
    simplify: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
    on_regions: Callable[[list[Region], RegionScores], None] | None = None,
) -> dict[str, Any]:
    """Finds the regions of a raster that match a text query; writes a mask COG and optionally polygons.

    Args:
        model: the SAM model (a :class:`Sam`, an rsvit model file, an official checkpoint or the two graphs
            of ``rsvit export``, named as in :func:`~rsvit.inference.promptable.load_promptable_model`).
        clip: a :class:`LoadedClip` or a CLIP checkpoint file (loaded safely with ``clip_model``).
        input: the raster.
        text: the query, e.g. ``"swimming pool"``.
        output: the mask GeoTIFF (COG).
        vector: optional GeoJSON of the matches' polygons.
        boxes: detector boxes (GeoJSON path or dict) as the candidates instead of automatic masks.
        box_crs: CRS of the box coordinates (default the file's, else EPSG:4326).
        clip_model: ``"auto"``, a preset or an open_clip architecture (see :func:`load_clip`).
        templates: template set name, file or templates (default the preset's, else ``rs-general``).
        negatives: prompts competing with the query in the softmax (default :data:`DEFAULT_NEGATIVES`).
        averaging: class-embedding rule (default the preset's, else normalise-then-mean).
        logit_scale: ``"fixed"`` (100), ``"model"`` or a number.
        score: ``"probability"`` (softmax over query and negatives) or ``"cosine"``.
        threshold: keep regions whose score is at least this (``None`` keeps all).
        top_k: keep at most this many (the best).
        margin: crop context around each region's box, a fraction of its longer side.
        background: ``"blur"``, ``"grey"`` or ``"keep"`` outside the mask in the crop.
        bands: 1-based bands for SAM.
        clip_bands: 1-based RGB bands for CLIP (default ``bands``); three are needed.
        window: SAM window side in pixels (default the model input size).
        overlap: pixels shared by neighbouring windows of the automatic generator (default window/4).
        scale: divisor to 0-1 (default the dtype's maximum).
        automatic: settings of the automatic generator (:class:`SamAutomaticMaskGenerator` arguments:
            ``points_per_side``, ``pred_iou_thresh``, ``stability_score_thresh``, ``box_nms_thresh``...;
            its defaults are those of ``masks-raster``); ``box_nms_thresh`` also rules across windows.
        cache_size: window embeddings kept when answering boxes.
        mode: ``"ids"`` (rank of the match, 1 = best) or ``"binary"``.
        batch_size: crops CLIP encodes together.
        encoder_dtype: autocast dtype of SAM's image encoder.
        device: where both models run (default where they were loaded).
        runtime: SAM's runtime, ``"torch"`` or ``"onnxruntime"``, as in
            :func:`~rsvit.inference.promptable.segment_raster` (CLIP runs in PyTorch).
        vector_crs: ``"EPSG:4326"``, ``"raster"`` or ``"pixel"``.
        simplify: polygon tolerance in pixels (0 disables).
        overwrite: replace existing outputs.
        progress: show progress bars.
        on_regions: called with every scored candidate and the scores (inspection, tests).

    Returns:
        A summary: text, candidate source, candidates scored, matches, windows, output paths.
    """
    if mode not in ("ids", "binary"):
        raise ValueError(f"mode must be 'ids' or 'binary', got {mode!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    input_path, output = Path(input), Path(output)
    vector_path = None if vector is None else Path(vector)
    check_outputs([output, vector_path], input_path, overwrite)
    if not isinstance(clip, LoadedClip):
        if not Path(clip).is_file():
            raise FileNotFoundError(f"CLIP checkpoint not found: {clip}")
        clip = load_clip(clip, model=clip_model, device=device or "cpu")
    elif device is not None:
        clip.model.to(device)
    scorer = RegionScorer(
        clip,
        text,
        templates=templates,
        negatives=DEFAULT_NEGATIVES if negatives is None else negatives,
        averaging=averaging,
        logit_scale=logit_scale,
        batch_size=batch_size,
    )
    if score == "probability" and not scorer.negatives:
        raise ValueError(
            "the probability score needs negative prompts to compare the text with; give some, or use "
            "score='cosine' (--score cosine)"
        )
    sam = open_promptable_model(model, runtime, encoder_dtype, device)
    reader = SceneReader(input_path, bands=bands, expected_bands=int(sam.pixel_mean.shape[0]), scale=scale)
    clip_reader = None
    try:
        # the polygons' CRS is checked before any work (a raster without CRS needs pixel coordinates)
        polygons = PolygonCollector(reader, vector_crs, simplify) if vector_path is not None else None
        try:
            clip_reader = SceneReader(
                input_path,
                bands=clip_bands if clip_bands is not None else bands,
                expected_bands=3,
                scale=scale,
            )
        except InputError as err:
            raise InputError(f"CLIP takes 3 (RGB) bands: {err}; choose them with --clip-bands") from None
        if boxes is not None:
            prompts = read_boxes(boxes, reader, box_crs)
            engine = RasterSamPredictor(
                sam, reader, window=window, cache_size=cache_size, encoder_dtype=encoder_dtype
            )
            regions, windows = box_regions(engine, prompts, progress)
            candidates = len(prompts)
        else:
            size = int(window or sam.img_size)
            grid = window_grid(reader.width, reader.height, size, size // 4 if overlap is None else overlap)
            generator = SamAutomaticMaskGenerator(sam, encoder_dtype=encoder_dtype, **(automatic or {}))
            instances, candidates = raster_instances(
                generator, reader, grid, generator.box_nms_thresh, progress
            )
            regions = [
                Region(i.box, i.mask, i.score, {"source": "automatic", "stability": round(i.stability, 4)})
                for i in instances
            ]
            windows = len(grid)
        scores = _score_all(scorer, clip_reader, regions, margin, background, progress)
        if on_regions is not None:
            on_regions(regions, scores)
        values = scores.get(score)
        matches = []
        for i in select_regions(values, threshold, top_k):
            props = {
                "score": round(float(values[i]), 4),
                "probability": round(float(scores.probability[i]), 4),
                "cosine": round(float(scores.cosine[i]), 4),
                "sam_score": round(regions[i].sam_score, 4),
                **regions[i].properties,
            }
            matches.append((regions[i], props))
        features = _write_matches(matches, reader, output, vector_path, polygons, mode, scorer.text)
    finally:
        reader.close()
        if clip_reader is not None:
            clip_reader.close()
    return {
        "text": scorer.text,
        "source": "boxes" if boxes is not None else "automatic",
        "candidates": candidates,
        "regions": len(regions),
        "matches": len(matches),
        "windows": windows,
        "score": score,
        "threshold": threshold,
        "output": str(output),
        "vector": None if vector_path is None else str(vector_path),
        "features": features if vector_path is not None else None,
    }
