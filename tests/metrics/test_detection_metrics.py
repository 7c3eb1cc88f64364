"""DOTA mAP: hand-worked examples, real ground truth against itself and perturbed copies, submissions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, DotaLabels, read_labels
from rsvit.metrics.detection import (
    evaluate_dota,
    gather_evaluation,
    polygon_iou,
    read_task1_submission,
    voc_ap,
    write_task1_submission,
)


def square(x: float, y: float, s: float = 10.0) -> list[float]:
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def hand_example() -> tuple[dict, dict]:
    gt = {
        "img": DotaLabels(
            np.array([square(0, 0), square(100, 0), square(200, 0), square(300, 0)]),
            ["ship"] * 4,
            np.array([0, 0, 0, 1]),  # the last one is difficult
        )
    }
    dets = {
        "ship": [
            ("img", 0.9, square(0, 0)),  # A: true positive
            ("img", 0.8, square(100, 1)),  # B (IoU 0.82): true positive
            ("img", 0.7, square(0, 0.5)),  # A again: duplicate, false positive
            ("img", 0.6, square(300, 0)),  # difficult object: ignored
            ("img", 0.5, square(200, 0)),  # C: true positive
        ]
    }
    return gt, dets


def test_hand_example_both_metrics() -> None:
    gt, dets = hand_example()
    # Worked out by hand: recall 1/3, 2/3, 2/3, 2/3, 1 and precision 1, 1, 2/3, 2/3, 3/4.
    # 11-point: levels 0..0.6 reach precision 1 (7 levels), 0.7..1.0 reach 3/4 (4 levels) -> 10/11.
    # Area: 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4 = 11/12.
    res07 = evaluate_dota(dets, gt, ["ship"], use_07_metric=True)
    assert res07.per_class["ship"].ap == pytest.approx(10 / 11)
    assert res07.map == pytest.approx(10 / 11)
    assert np.allclose(res07.per_class["ship"].recall, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert np.allclose(res07.per_class["ship"].precision, [1, 1, 2 / 3, 2 / 3, 3 / 4])
    res = evaluate_dota(dets, gt, ["ship"], use_07_metric=False)
    assert res.per_class["ship"].ap == pytest.approx(11 / 12)
    assert res.per_class["ship"].num_gt == 3 and res.per_class["ship"].num_difficult == 1
    # A match must be strictly above the threshold: IoU of B's detection is 90/110.
    strict = evaluate_dota(dets, gt, ["ship"], iou_threshold=90 / 110)
    assert strict.per_class["ship"].recall[-1] == pytest.approx(2 / 3)


def test_voc_ap_edge_cases() -> None:
    assert voc_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    assert voc_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11)
    assert voc_ap(np.array([0.5]), np.array([1.0]), use_07_metric=False) == pytest.approx(0.5)
    assert voc_ap(np.zeros(3), np.zeros(3)) == 0.0


def test_classes_without_ground_truth_and_unknown_classes() -> None:
    gt, dets = hand_example()
    res = evaluate_dota(dets, gt, ["ship", "plane"])
    assert math.isnan(res.per_class["plane"].ap)
    assert res.map == pytest.approx(10 / 11)  # nan classes are left out of the mean
    assert "n/a" in res.table() and "mAP" in res.table()
    with pytest.raises(ValueError, match="not in the class list"):
        evaluate_dota({"car": [("img", 0.5, square(0, 0))]}, gt, ["ship"])
    # Detections on an image without ground truth are false positives.
    extra = {"ship": [*dets["ship"], ("other", 0.95, square(0, 0))]}
    assert evaluate_dota(extra, gt, ["ship"]).per_class["ship"].precision[0] == 0.0


def real_ground_truth(data_dir: Path) -> dict[str, DotaLabels]:
    root = data_dir / "dota-samples"
    paths = sorted((root / "labelTxt").glob("*.txt")) + sorted(
        (root / "labelTxt_without_image").glob("*.txt")
    )
    return {p.stem: read_labels(p, classes=DOTA_V1_0_CLASSES) for p in paths}


def as_detections(gt: dict[str, DotaLabels], rng: np.random.Generator, transform=None) -> dict:
    dets: dict[str, list] = {}
    for img, labels in gt.items():
        for k, (poly, cls) in enumerate(zip(labels.polygons, labels.classes, strict=True)):
            score, poly = rng.uniform(0.5, 1.0), poly.copy()
            if transform is not None:
                score, poly = transform(img, k, score, poly)
            dets.setdefault(cls, []).append((img, score, poly))
    return dets


def shrink(poly: np.ndarray, factor: float) -> np.ndarray:
    pts = poly.reshape(4, 2)
    c = pts.mean(axis=0)
    return (c + (pts - c) * factor).reshape(-1)


@pytest.mark.parametrize("use_07", [True, False])
def test_ground_truth_against_itself(data_dir: Path, use_07: bool) -> None:
    gt = real_ground_truth(data_dir)
    res = evaluate_dota(
        as_detections(gt, np.random.default_rng(0)), gt, DOTA_V1_0_CLASSES, use_07_metric=use_07
    )
    present = {c for labels in gt.values() for c in labels.classes}
    assert {c for c, r in res.per_class.items() if not math.isnan(r.ap)} == present
    for cls in present:
        assert res.per_class[cls].ap == pytest.approx(1.0)
    assert res.map == pytest.approx(1.0)


def test_ap_falls_as_expected_under_perturbation(data_dir: Path) -> None:
    gt = real_ground_truth(data_dir)
    rng = np.random.default_rng(1)
    # Shrinking a convex polygon by s about its centroid leaves it nested with IoU s^2.
    aps = []
    for s in (1.0, 0.72, 0.69):
        res = evaluate_dota(
            as_detections(gt, rng, lambda i, k, sc, p, s=s: (sc, shrink(p, s))), gt, DOTA_V1_0_CLASSES
        )
        aps.append(res.map)
    assert aps[:2] == pytest.approx([1.0, 1.0])  # IoU 0.52 still matches at 0.5
    assert aps[2] == pytest.approx(0.0)  # IoU 0.476 does not
    # Spoil a known share of the ships and rank the spoiled ones last: recall stops at the intact
    # share r with precision 1, so the 11-point AP is (number of levels <= r) / 11.
    ships = [(img, k) for img, labels in gt.items() for k, c in enumerate(labels.classes) if c == "ship"]
    difficult = {(img, k) for img, k in ships if gt[img].difficult[k]}
    spoiled = {ships[i] for i in rng.choice(len(ships), size=len(ships) * 3 // 10, replace=False)}

    def spoil(img: str, k: int, score: float, poly: np.ndarray) -> tuple[float, np.ndarray]:
        if (img, k) in spoiled:
            return score - 1.0, shrink(poly, 0.5)
        return score, poly

    res = evaluate_dota(as_detections(gt, rng, spoil), gt, DOTA_V1_0_CLASSES)
    counted = [s for s in ships if s not in difficult]
    r = sum(1 for s in counted if s not in spoiled) / len(counted)
    levels = sum(1 for level in np.linspace(0, 1, 11) if level <= r + 1e-12)
    assert res.per_class["ship"].ap == pytest.approx(levels / 11)
    assert res.per_class["ship"].recall[-1] == pytest.approx(r)


def test_polygon_iou() -> None:
    a = np.array([square(0, 0), square(5, 0)])
    iou = polygon_iou(a, a)
    assert np.allclose(iou, [[1, 50 / 150], [50 / 150, 1]])
    bow = np.array([[0, 0, 10, 10, 10, 0, 0, 10]], dtype=float)  # repaired, not crashing
    assert np.isfinite(polygon_iou(bow, a)).all()
    assert polygon_iou(np.zeros((0, 8)), a).shape == (0, 2)


def test_task1_submission_round_trip(tmp_path: Path) -> None:
    gt, dets = hand_example()
    paths = write_task1_submission(tmp_path, dets, DOTA_V1_0_CLASSES)
    assert len(paths) == 15 and {p.name for p in paths} == {f"Task1_{c}.txt" for c in DOTA_V1_0_CLASSES}
    lines = (tmp_path / "Task1_ship.txt").read_text().splitlines()
    assert lines[0].split() == ["img", "0.9", *(f"{v:.2f}" for v in square(0, 0))]
    assert (tmp_path / "Task1_plane.txt").read_text() == ""
    back = read_task1_submission(tmp_path, DOTA_V1_0_CLASSES)
    assert [(i, s) for i, s, _ in back["ship"]] == [(i, s) for i, s, _ in dets["ship"]]
    assert evaluate_dota(back, gt, ["ship"]).map == pytest.approx(10 / 11)
    (tmp_path / "Task1_plane.txt").write_text("img 0.5 1 2 3\n")
    with pytest.raises(ValueError, match=r"Task1_plane.txt:1: expected 10 fields"):
        read_task1_submission(tmp_path, DOTA_V1_0_CLASSES)


def _shards() -> list[tuple[dict, dict]]:
    """The hand example's image on rank 1, and image "b" on both ranks (a distributed sampler's padding)."""
    gt, dets = hand_example()
    b_truth = DotaLabels(np.array([square(0, 0)]), ["plane"], np.array([0]))
    rank0 = ({"plane": [("b", 0.7, square(0, 0))]}, {"b": b_truth})
    rank1 = (
        {"ship": dets["ship"], "plane": [("b", 0.7, square(0, 0)), ("b", 0.4, square(50, 50))]},
        {"img": gt["img"], "b": b_truth},
    )
    return [rank0, rank1]


def test_evaluation_gathered_over_two_fake_processes() -> None:
    gt, dets = hand_example()
    shards = _shards()

    def fake_all_gather(out: list, obj: object) -> None:  # what every rank receives: all ranks' parts
        out[:] = shards

    found, truth = gather_evaluation(*shards[0], all_gather_object=fake_all_gather, world_size=2)
    assert sorted(truth) == ["b", "img"]
    # "b" was seen by both ranks: rank 0's copy is kept, rank 1's repeats (and its extra box) dropped
    assert found["plane"] == [("b", 0.7, square(0, 0))]
    assert found["ship"] == dets["ship"]
    merged = evaluate_dota(found, truth, ["ship", "plane"])
    alone = evaluate_dota(dets, gt, ["ship"])
    assert merged.per_class["ship"].ap == alone.per_class["ship"].ap
    assert merged.per_class["plane"].ap == 1.0
    # one rank's shard alone gives another mAP: the gather matters
    assert evaluate_dota(*shards[0], ["ship", "plane"]).map != merged.map
    # without a process group the inputs come back unchanged
    assert gather_evaluation(*shards[1]) == (shards[1][0], shards[1][1])


def _gloo_worker(rank: int, port: int, queue: object) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        found, truth = gather_evaluation(*_shards()[rank])
        queue.put((rank, sorted(truth), {k: [(d[0], d[1]) for d in v] for k, v in found.items()}))
    finally:
        dist.destroy_process_group()


def test_evaluation_gathered_over_two_gloo_processes() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("fork")  # the workers start without importing anything again
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gloo_worker, args=(rank, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _, dets = hand_example()
    expected = {"ship": [(d[0], d[1]) for d in dets["ship"]], "plane": [("b", 0.7)]}
    assert [r[0] for r in results] == [0, 1]
    assert all(r[1] == ["b", "img"] and r[2] == expected for r in results)  # both ranks see everything
