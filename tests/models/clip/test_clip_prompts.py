"""Template sets, template files and readable class names."""

from __future__ import annotations

import pytest

from rsvit.models.clip import (
    DATASET_CLASS_NAMES,
    TEMPLATE_SETS,
    TemplateError,
    UnknownClassesError,
    plain_words,
    read_template_file,
    readable_names,
    resolve_templates,
)


def test_georsclip_set_is_35_phrasings_times_3_nouns():
    templates = TEMPLATE_SETS["georsclip"]
    assert len(templates) == len(set(templates)) == 105
    for noun in ("remote sensing image", "aerial image", "satellite image"):
        assert sum(noun in t for t in templates) == 35
    # the examples quoted from RS5M's classname_and_prompt files
    for example in (
        "a remote sensing image of many {}.",
        "a low resolution aerial image of the {}.",
        "a satellite image of a cool {}.",
    ):
        assert example in templates
    assert "an aerial image of the {}." in templates and "a aerial image of the {}." not in templates


def test_paper_sets():
    assert TEMPLATE_SETS["skyclip"] == ("a satellite photo of {}.", "a satellite image of {}")
    assert TEMPLATE_SETS["remoteclip"] == ("a satellite photo of {}",)
    for templates in TEMPLATE_SETS.values():
        assert all(t.count("{}") == 1 for t in templates)


def test_template_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\n\na drone photo of {}.\n  an orthophoto of {}  \n")
    assert read_template_file(path) == ("a drone photo of {}.", "an orthophoto of {}")
    assert resolve_templates(str(path)) == read_template_file(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_template_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.txt"
    path.write_text(text)
    with pytest.raises(TemplateError, match="holds no templates"):
        read_template_file(path)


@pytest.mark.parametrize("line", ["a satellite photo", "{} and {}", "a {label} photo of {}"])
def test_template_without_one_placeholder(tmp_path, line):
    path = tmp_path / "bad.txt"
    path.write_text(f"a photo of {{}}.\n{line}\n")
    with pytest.raises(TemplateError, match=r"template 2 .* exactly one"):
        read_template_file(path)


def test_unknown_template_set():
    with pytest.raises(TemplateError, match=r"unknown template set 'clip80'.*georsclip"):
        resolve_templates("clip80")


def test_dataset_tables():
    sizes = {name: len(table) for name, table in DATASET_CLASS_NAMES.items()}
    assert sizes == {"rsscn7": 7, "ucm": 21, "aid": 30, "nwpu-resisc45": 45}
    for table in DATASET_CLASS_NAMES.values():
        assert all(name and name == name.lower() and "_" not in name for name in table.values())


def test_readable_names_recognise_the_dataset():
    classes = ["aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"]
    names = readable_names(classes)
    assert names[3] == "river or lake" and names[6] == "parking lot"
    assert readable_names(["dRiverLake"], dataset="RSSCN7") == ["river or lake"]
    assert readable_names(["dense_residential", "sea_ice"], dataset="resisc45") == [
        "dense residential area",
        "sea ice",
    ]
    assert readable_names(["BareLand", "RailwayStation"], dataset="aid") == ["bare land", "railway station"]


def test_other_folders_become_plain_words():
    assert readable_names(["dry_field", "wind_turbine"], dataset="millionaid") == [
        "dry field",
        "wind turbine",
    ]
    assert readable_names(["OilPalm", "a/b"]) == ["oil palm", "a b"]
    assert readable_names(["OilPalm"], overrides={"OilPalm": "oil palm plantation"}) == [
        "oil palm plantation"
    ]
    assert plain_words("DenseResidential") == "dense residential"


def test_unknown_datasets_and_classes():
    with pytest.raises(UnknownClassesError, match=r"unknown dataset 'eurosat'.*rsscn7"):
        readable_names(["Forest"], dataset="eurosat")
    with pytest.raises(UnknownClassesError, match=r"classes \['volcano'\] are not ucm classes"):
        readable_names(["beach", "volcano"], dataset="ucm")
