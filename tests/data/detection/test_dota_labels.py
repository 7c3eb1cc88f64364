"""labelTxt reading/writing, bad-input reporting (with a hypothesis fuzz), HRSC2016 XML, folder pairing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsvit.data.detection.labels import (
    DOTA_CLASSES,
    DOTA_V1_0_CLASSES,
    DotaDatasetError,
    DotaLabelError,
    DotaLabels,
    concat_labels,
    format_labels,
    pair_images_and_labels,
    parse_labels,
    polygon_self_intersects,
    read_hrsc2016_xml,
    read_labels,
    write_labels,
)
from rsvit.ops.reference import box_iou_rotated_shapely


def test_class_lists() -> None:
    assert (
        len(DOTA_CLASSES["1.0"]) == 15 and len(DOTA_CLASSES["1.5"]) == 16 and len(DOTA_CLASSES["2.0"]) == 18
    )
    assert DOTA_CLASSES["1.5"][-1] == "container-crane"
    assert set(DOTA_CLASSES["2.0"]) - set(DOTA_CLASSES["1.5"]) == {"airport", "helipad"}
    assert len(set(DOTA_CLASSES["2.0"])) == 18


def test_read_real_labels(data_dir: Path) -> None:
    root = data_dir / "dota-samples"
    p0706 = read_labels(root / "labelTxt" / "P0706.txt", classes=DOTA_V1_0_CLASSES)
    assert len(p0706) == 536 and set(p0706.classes) == {"ship", "harbor"}
    assert p0706.image_source == "GoogleEarth" and p0706.gsd == pytest.approx(0.255589285596)
    # Cross-check against a plain reading of the same file.
    rows = [line.split() for line in (root / "labelTxt" / "P0706.txt").read_text().splitlines()[2:]]
    assert np.array_equal(p0706.polygons, np.array([[float(v) for v in r[:8]] for r in rows]))
    assert p0706.difficult.tolist() == [int(r[9]) for r in rows]
    p1888 = read_labels(root / "labelTxt" / "P1888.txt", classes=DOTA_V1_0_CLASSES)
    assert len(p1888) == 64 and set(p1888.classes) <= {"small-vehicle", "large-vehicle"}
    for path in sorted((root / "labelTxt_without_image").glob("*.txt")):
        labels = read_labels(path, classes=DOTA_V1_0_CLASSES)
        assert len(labels) == len(path.read_text().splitlines()) - 2 and not labels.issues
    # Minimum-area rectangles of the labelled quadrilaterals cover them closely.
    obbs = p0706.obbs()
    assert obbs.shape == (536, 5)
    assert bool((obbs[:, 2] >= obbs[:, 3]).all())


def test_write_read_round_trip(tmp_path: Path, data_dir: Path) -> None:
    labels = read_labels(data_dir / "dota-samples" / "labelTxt" / "P1888.txt")
    out = tmp_path / "sub" / "P1888.txt"
    write_labels(out, labels)
    again = read_labels(out)
    assert np.array_equal(again.polygons, labels.polygons) and again.classes == labels.classes
    assert np.array_equal(again.difficult, labels.difficult)
    assert (again.image_source, again.gsd) == (labels.image_source, labels.gsd)
    assert [p.name for p in out.parent.iterdir()] == ["P1888.txt"]  # no temporary files left


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1 2 3 4 5 6 7 ship 0", "expected 8 coordinates before the class name, found 7"),
        ("1 2 3 4 5 6 7 8 9 ship", "expected 8 coordinates before the class name, found 9"),
        ("1 2 3 4 5 6 7 8", "9 or 10 fields"),
        ("1 2 3 4 5 6 7 8 ship 0 extra", "9 or 10 fields"),
        ("1 2 3 x 5 6 7 8 ship 0", "coordinate 'x' is not a number"),
        ("1 2 3 4 5 6 7 nan ship 0", "finite"),
        ("0 0 10 0 10 10 0 10 spaceship 0", "unknown class 'spaceship'"),
        ("0 0 10 0 10 10 0 10 ship yes", "difficult flag 'yes'"),
        ("0 0 10 0 10 10 0 10 ship -1", "difficult flag must be >= 0"),
        ("0 0 10 0 20 0 30 0 ship 0", "zero area"),
        ("0 0 10 10 10 0 0 10 ship 0", "intersects itself"),
    ],
)
def test_bad_lines_name_file_and_line(line: str, reason: str) -> None:
    text = f"imagesource:GoogleEarth\ngsd:0.5\n0 0 4 0 4 4 0 4 ship 0\n{line}\n"
    with pytest.raises(DotaLabelError, match=reason) as err:
        parse_labels(text, source="P9999.txt", classes=DOTA_V1_0_CLASSES)
    assert str(err.value).startswith("P9999.txt:4: ")
    assert err.value.issue.line == 4
    # Skipping keeps the good object and reports exactly one dropped line, with a warning that counts it.
    with pytest.warns(UserWarning, match=r"P9999.txt: skipped 1 of 2 object lines"):
        labels = parse_labels(text, source="P9999.txt", classes=DOTA_V1_0_CLASSES, on_error="warn")
    assert len(labels) == 1 and len(labels.issues) == 1 and labels.issues[0].line == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = parse_labels(text, source="P9999.txt", classes=DOTA_V1_0_CLASSES, on_error="skip")
    assert len(quiet.issues) == 1


def test_select_and_concat() -> None:
    labels = parse_labels("0 0 4 0 4 4 0 4 ship 0\n10 10 14 10 14 14 10 14 plane 1\n")
    assert labels.select(np.array([False, True])).classes == ["plane"]
    assert labels.select([1, 0]).difficult.tolist() == [1, 0]
    both = concat_labels([labels, labels.select([0])])
    assert both.classes == ["ship", "plane", "ship"] and both.polygons.shape == (3, 8)
    assert labels.labels(DOTA_V1_0_CLASSES).tolist() == [6, 0]
    with pytest.raises(KeyError, match="car"):
        DotaLabels(np.zeros((1, 8)), ["car"], [0]).labels(DOTA_V1_0_CLASSES)
    with pytest.raises(ValueError, match="disagree in length"):
        DotaLabels(np.zeros((2, 8)), ["ship"], [0])


def test_header_variants_and_missing_difficult() -> None:
    labels = parse_labels("imagesource:GF\ngsd:null\n\n0 0 4 0 4 4 0 4 bridge\n")
    assert labels.image_source == "GF" and labels.gsd is None
    assert labels.difficult.tolist() == [0]
    with pytest.raises(DotaLabelError, match="bad gsd header"):
        parse_labels("gsd:abc\n", source="a.txt")
    assert len(parse_labels("")) == 0


def test_self_intersection_test() -> None:
    square = np.array([[0, 0, 1, 0, 1, 1, 0, 1]], dtype=float)
    bow = np.array([[0, 0, 1, 1, 1, 0, 0, 1]], dtype=float)
    concave = np.array([[0, 0, 2, 0, 1, 0.5, 1, 2]], dtype=float)  # an arrowhead: simple, not convex
    assert polygon_self_intersects(np.concatenate([square, bow, concave])).tolist() == [False, True, False]


def test_missing_images_are_reported(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "dota-samples"
    pairs = pair_images_and_labels(root)
    assert [(i.name, lab.name) for i, lab in pairs] == [
        ("P0706.png", "P0706.txt"),
        ("P1888.png", "P1888.txt"),
    ]
    with pytest.raises(DotaDatasetError, match=r"5 of 5 label files .* have no image.*P0770.txt"):
        pair_images_and_labels(root, label_dir="labelTxt_without_image")
    with pytest.warns(UserWarning, match="2 images .* have no label file"):
        pairs = pair_images_and_labels(root, label_dir="labelTxt_without_image", require_images=False)
    assert len(pairs) == 5 and all(img is None for img, _ in pairs)
    (tmp_path / "labelTxt").mkdir()
    with pytest.raises(DotaDatasetError, match="image folder not found"):
        pair_images_and_labels(tmp_path)


coordinate = st.one_of(
    st.integers(-5000, 5000).map(str),
    st.floats(-1e4, 1e4, allow_nan=False).map(repr),
    st.sampled_from(["nan", "inf", "1e400", "x", "", "1,5", "--1"]),
)
# Arbitrary printable tokens without separators (whitespace, line breaks) or the header colon.
junk = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters=":"),
    min_size=1,
    max_size=6,
)
field_text = st.one_of(coordinate, junk, st.sampled_from([*DOTA_V1_0_CLASSES, "car", "0", "1", "2", "-1"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(field_text, min_size=0, max_size=12).map(" ".join), max_size=8))
def test_fuzz_parser_never_loses_a_line_silently(lines: list[str]) -> None:
    text = "\n".join(["imagesource:GoogleEarth", "gsd:0.3", *lines])
    nonblank = sum(1 for line in lines if line.strip())
    labels = parse_labels(text, source="fuzz.txt", classes=DOTA_V1_0_CLASSES, on_error="skip")
    # Every non-blank object line is either kept or reported with its own line number.
    assert len(labels) + len(labels.issues) == nonblank
    assert all(issue.path == "fuzz.txt" and 3 <= issue.line <= len(lines) + 2 for issue in labels.issues)
    assert np.isfinite(labels.polygons).all()
    assert set(labels.classes) <= set(DOTA_V1_0_CLASSES)
    # Strict mode raises exactly when something was skipped, naming the first bad line.
    if labels.issues:
        with pytest.raises(DotaLabelError) as err:
            parse_labels(text, source="fuzz.txt", classes=DOTA_V1_0_CLASSES)
        assert err.value.issue.line == labels.issues[0].line
    else:
        assert len(parse_labels(text, source="fuzz.txt", classes=DOTA_V1_0_CLASSES)) == len(labels)


polygon = st.lists(st.integers(-3000, 3000) | st.floats(-3000, 3000, allow_nan=False), min_size=8, max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(polygon, st.sampled_from(DOTA_V1_0_CLASSES), st.integers(0, 1)), max_size=6))
def test_fuzz_format_parse_round_trip(objects: list[tuple[list[float], str, int]]) -> None:
    labels = DotaLabels(
        np.array([o[0] for o in objects], dtype=np.float64).reshape(-1, 8),
        [o[1] for o in objects],
        np.array([o[2] for o in objects]),
        image_source="GoogleEarth",
        gsd=0.25,
    )
    back = parse_labels(format_labels(labels), check_geometry=False)
    assert np.array_equal(back.polygons, labels.polygons)
    assert back.classes == labels.classes and np.array_equal(back.difficult, labels.difficult)
    assert back.gsd == 0.25 and back.image_source == "GoogleEarth"


HRSC_XML = """<?xml version="1.0" encoding="utf-8"?>
<HRSC_Image>
  <Img_ID>100000001</Img_ID>
  <Img_SizeWidth>1166</Img_SizeWidth>
  <Img_SizeHeight>753</Img_SizeHeight>
  <HRSC_Objects>
    <HRSC_Object>
      <Class_ID>100000002</Class_ID>
      <difficult>0</difficult>
      <mbox_cx>200.5</mbox_cx><mbox_cy>300.0</mbox_cy>
      <mbox_w>40.0</mbox_w><mbox_h>120.0</mbox_h><mbox_ang>-1.2</mbox_ang>
    </HRSC_Object>
    <HRSC_Object>
      <Class_ID>100000005</Class_ID>
      <difficult>1</difficult>
      <mbox_cx>600</mbox_cx><mbox_cy>100</mbox_cy>
      <mbox_w>300</mbox_w><mbox_h>50</mbox_h><mbox_ang>0.3</mbox_ang>
    </HRSC_Object>
  </HRSC_Objects>
</HRSC_Image>
"""


def test_hrsc2016_reader(tmp_path: Path) -> None:
    path = tmp_path / "100000001.xml"
    path.write_text(HRSC_XML)
    ann = read_hrsc2016_xml(path)
    assert (ann.image_id, ann.width, ann.height) == ("100000001", 1166, 753)
    assert ann.class_ids.tolist() == [100000002, 100000005] and ann.difficult.tolist() == [0, 1]
    raw = np.array([[200.5, 300.0, 40.0, 120.0, -1.2], [600, 100, 300, 50, 0.3]])
    # Regularised to le90 but still the same rectangles.
    assert np.allclose(box_iou_rotated_shapely(ann.boxes, raw, aligned=True), 1.0)
    assert (ann.boxes[:, 2] >= ann.boxes[:, 3]).all()
    assert len(ann.to_dota()) == 2
    path.write_text(HRSC_XML.replace("<mbox_h>50</mbox_h>", "<mbox_h>fifty</mbox_h>"))
    with pytest.raises(ValueError, match=r"object 2 <mbox_h> is not a number"):
        read_hrsc2016_xml(path)
    path.write_text("<HRSC_Image><Img_ID>1")
    with pytest.raises(ValueError, match="not valid XML"):
        read_hrsc2016_xml(path)


def test_detections_keep_their_scores() -> None:
    polys = np.array([[0, 0, 10, 0, 10, 5, 0, 5], [20, 20, 30, 20, 30, 40, 20, 40]], dtype=np.float64)
    scores = np.array([0.9731234567, 1.0])
    dets = DotaLabels(polys, ["ship", "plane"], np.zeros(2, dtype=np.int64), scores=scores)
    text = format_labels(dets)
    assert [line.split()[-1] for line in text.splitlines()] == ["0.9731234567", "1.0"]
    back = parse_labels(text)
    assert back.scores is not None and back.scores.tolist() == scores.tolist()
    assert back.classes == ["ship", "plane"] and np.array_equal(back.polygons, polys)
    assert back.select([1]).scores.tolist() == [1.0]
    assert concat_labels([back, back]).scores.tolist() == scores.tolist() * 2
    # Ground truth keeps its integer flags and no scores.
    truth = parse_labels("0 0 10 0 10 5 0 5 ship 1\n")
    assert truth.scores is None and truth.difficult.tolist() == [1]
    with pytest.raises(ValueError, match="detections"):
        concat_labels([back, truth])
    # A file is all detections or all ground truth.
    with pytest.raises(DotaLabelError, match=r":2: earlier object lines have a score"):
        parse_labels("0 0 10 0 10 5 0 5 ship 0.5\n0 0 10 0 10 5 0 5 ship 1\n")
    with pytest.raises(ValueError, match="2 scores for 1 objects"):
        DotaLabels(polys[:1], ["ship"], [0], scores=[0.1, 0.2])
