"""``rsvit predict`` keeps one output per input, even when file names repeat across folders."""

from __future__ import annotations

from pathlib import Path

from rsvit.cli import main
from rsvit.demo import demo_config_path
from rsvit.tasks.writers import relative_name


def test_equal_file_names_in_different_tiles_keep_apart(tmp_path: Path) -> None:
    """Bundled Dubai tiles 2 and 5 both hold image_part_007.jpg: both predictions are written."""
    root = demo_config_path().parent / "dubai_mini"
    images = sorted((root / "Tile 2" / "images").glob("*.jpg")) + sorted(
        (root / "Tile 5" / "images").glob("*.jpg")
    )
    assert len({p.name for p in images}) < len(images)  # the set really repeats a name
    out = tmp_path / "predictions"
    args = [
        "predict",
        "--config",
        str(demo_config_path()),
        "--data.test_split=[2, 5]",
        "--model.model.head_kwargs.channels=16",
        "--model.model.head_kwargs.aux_channels=16",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--prediction_writer.output_dir={out}",
        "--trainer.enable_progress_bar=false",
    ]
    assert main(args) == 0
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert len(masks) == len(images)
    assert "image_part_007_mask.png" in masks and "Tile_5__images__image_part_007_mask.png" in masks


def test_relative_name_outside_the_base_is_none(tmp_path: Path) -> None:
    inside = tmp_path / "Tile 3" / "images" / "a.jpg"
    assert relative_name(str(inside), tmp_path.resolve()) == "Tile_3__images__a"
    assert relative_name("/elsewhere/a.jpg", tmp_path.resolve()) is None
    assert relative_name(str(inside), None) is None
