"""Prompt templates for zero-shot classification: the sets each remote-sensing CLIP paper used.

A template is a sentence with one ``{}`` where the class name goes. The published zero-shot numbers
depend on the set (and on the averaging rule, see :mod:`rsvit.models.clip.zeroshot`), so every set is
named after the paper whose evaluation it reproduces:

* ``remoteclip``: the single template quoted for the RemoteCLIP paper (its repository ships no
  zero-shot code).
* ``skyclip``: the two templates SkyScript evaluates every scene dataset with.
* ``georsclip``: the 105 templates of RS5M/GeoRSCLIP (35 phrasings of the CLIP ImageNet style, each
  with "remote sensing image", "aerial image" and "satellite image" in place of "photo").
* ``rs-general``: a short general remote-sensing set for new datasets.

User sets come from a text file, one template per line (blank lines and ``#`` comments ignored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "TEMPLATE_SETS",
    "TemplateError",
    "available_template_sets",
    "check_templates",
    "fill_templates",
    "georsclip_templates",
    "read_template_file",
    "resolve_templates",
]


class TemplateError(ValueError):
    """A template set that cannot be used: unknown name, empty file, no or several ``{}``."""


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def georsclip_templates() -> tuple[str, ...]:
    """The 105 GeoRSCLIP templates: 35 phrasings x 3 image nouns, noun by noun."""
    plain = ("many {}", "a {}", "the {}", "the hard to see {}", "a hard to see {}")
    qualities = (
        "low resolution",
        "bad",
        "cropped",
        "bright",
        "dark",
        "close-up",
        "black and white",
        "jpeg corrupted",
        "blurry",
        "good",
    )
    sizes = ("large", "nice", "small", "weird", "cool")
    templates: list[str] = []
    for noun in ("remote sensing image", "aerial image", "satellite image"):
        templates += [f"{_with_article(noun)} of {tail}." for tail in plain]
        for quality in qualities:
            templates += [f"a {quality} {noun} of the {{}}.", f"a {quality} {noun} of a {{}}."]
        for size in sizes:
            templates += [
                f"{_with_article(noun)} of the {size} {{}}.",
                f"{_with_article(noun)} of a {size} {{}}.",
            ]
    return tuple(templates)


#: Named template sets (see the module docstring for where each comes from).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "remoteclip": ("a satellite photo of {}",),
    "skyclip": ("a satellite photo of {}.", "a satellite image of {}"),
    "georsclip": georsclip_templates(),
    "rs-general": (
        "a satellite photo of {}.",
        "a satellite image of {}.",
        "an aerial photo of {}.",
        "an aerial image of {}.",
        "a remote sensing image of {}.",
        "an overhead view of {}.",
        "a top-down aerial view of {}.",
    ),
}


def available_template_sets() -> list[str]:
    """Names of the built-in prompt template sets, sorted."""
    return sorted(TEMPLATE_SETS)


def check_templates(templates: Sequence[str], where: str = "templates") -> tuple[str, ...]:
    """The templates as a tuple; each must hold exactly one ``{}`` and nothing else in braces."""
    templates = tuple(templates)
    if not templates:
        raise TemplateError(
            f"{where}: no templates; give at least one sentence with '{{}}' for the class name"
        )
    for number, template in enumerate(templates, start=1):
        if template.count("{}") != 1 or template.count("{") != 1 or template.count("}") != 1:
            raise TemplateError(
                f"{where}: template {number} {template!r} must contain exactly one '{{}}' (the class name) "
                "and no other braces"
            )
    return templates


def read_template_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """One template per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"template file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise TemplateError(
            f"{path} holds no templates (empty, or only comments); write one sentence per line with '{{}}' "
            "where the class name goes, e.g. 'a satellite photo of {}.'"
        )
    return check_templates(templates, where=str(path))


def resolve_templates(name_or_path: str) -> tuple[str, ...]:
    """A named set, or the templates of a file when ``name_or_path`` is not a set name."""
    if name_or_path in TEMPLATE_SETS:
        return TEMPLATE_SETS[name_or_path]
    if Path(name_or_path).is_file():
        return read_template_file(name_or_path)
    raise TemplateError(
        f"unknown template set {name_or_path!r} (and no such file); named sets: "
        f"{', '.join(available_template_sets())}, or give a text file with one template per line"
    )


def fill_templates(templates: Sequence[str], class_name: str) -> list[str]:
    """One prompt per template with ``class_name`` in its ``{}``."""
    return [template.format(class_name) for template in templates]
