"""Readable class names for the scene datasets rsvit reads, for use inside prompts.

Folder names make poor prompts (``dRiverLake``, ``denseresidential``, ``BareLand``): a text encoder
scores "a satellite photo of river or lake." far better. Each known dataset maps its folder names
(in the dataset's own spelling) to a readable name; :func:`readable_names` picks the table by dataset
name, or recognises the dataset from the folder names. Folders of other datasets, and MillionAID
(whose 51 leaf folders are already plain words joined by ``_``), go through :func:`plain_words`:
underscores, slashes and camel case become spaces, all lower case (GeoRSCLIP's rule, plus camel case).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = [
    "DATASET_CLASS_NAMES",
    "UnknownClassesError",
    "dataset_for_classes",
    "known_datasets",
    "plain_words",
    "readable_names",
]


class UnknownClassesError(ValueError):
    """A class list that does not belong to the named dataset, or an unknown dataset name."""


#: Folder name -> readable name, per dataset, in the datasets' sorted folder order.
DATASET_CLASS_NAMES: dict[str, dict[str, str]] = {
    "rsscn7": {
        "aGrass": "grass",
        "bField": "field",
        "cIndustry": "industry",
        "dRiverLake": "river or lake",
        "eForest": "forest",
        "fResident": "residential area",
        "gParking": "parking lot",
    },
    "ucm": {
        "agricultural": "agricultural land",
        "airplane": "airplane",
        "baseballdiamond": "baseball diamond",
        "beach": "beach",
        "buildings": "buildings",
        "chaparral": "chaparral",
        "denseresidential": "dense residential area",
        "forest": "forest",
        "freeway": "freeway",
        "golfcourse": "golf course",
        "harbor": "harbor",
        "intersection": "intersection",
        "mediumresidential": "medium residential area",
        "mobilehomepark": "mobile home park",
        "overpass": "overpass",
        "parkinglot": "parking lot",
        "river": "river",
        "runway": "runway",
        "sparseresidential": "sparse residential area",
        "storagetanks": "storage tanks",
        "tenniscourt": "tennis court",
    },
    "aid": {
        "Airport": "airport",
        "BareLand": "bare land",
        "BaseballField": "baseball field",
        "Beach": "beach",
        "Bridge": "bridge",
        "Center": "center",
        "Church": "church",
        "Commercial": "commercial area",
        "DenseResidential": "dense residential area",
        "Desert": "desert",
        "Farmland": "farmland",
        "Forest": "forest",
        "Industrial": "industrial area",
        "Meadow": "meadow",
        "MediumResidential": "medium residential area",
        "Mountain": "mountain",
        "Park": "park",
        "Parking": "parking lot",
        "Playground": "playground",
        "Pond": "pond",
        "Port": "port",
        "RailwayStation": "railway station",
        "Resort": "resort",
        "River": "river",
        "School": "school",
        "SparseResidential": "sparse residential area",
        "Square": "square",
        "Stadium": "stadium",
        "StorageTanks": "storage tanks",
        "Viaduct": "viaduct",
    },
    "nwpu-resisc45": {
        name: name.replace("_", " ")
        for name in (
            "airplane",
            "airport",
            "baseball_diamond",
            "basketball_court",
            "beach",
            "bridge",
            "chaparral",
            "church",
            "circular_farmland",
            "cloud",
            "commercial_area",
            "dense_residential",
            "desert",
            "forest",
            "freeway",
            "golf_course",
            "ground_track_field",
            "harbor",
            "industrial_area",
            "intersection",
            "island",
            "lake",
            "meadow",
            "medium_residential",
            "mobile_home_park",
            "mountain",
            "overpass",
            "palace",
            "parking_lot",
            "railway",
            "railway_station",
            "rectangular_farmland",
            "river",
            "roundabout",
            "runway",
            "sea_ice",
            "ship",
            "snowberg",
            "sparse_residential",
            "stadium",
            "storage_tank",
            "tennis_court",
            "terrace",
            "thermal_power_station",
            "wetland",
        )
    },
}
DATASET_CLASS_NAMES["nwpu-resisc45"].update(
    {
        "dense_residential": "dense residential area",
        "medium_residential": "medium residential area",
        "sparse_residential": "sparse residential area",
    }
)

# Other spellings of the dataset names users type.
_ALIASES = {
    "uc-merced": "ucm",
    "ucmerced": "ucm",
    "resisc45": "nwpu-resisc45",
    "nwpu": "nwpu-resisc45",
    "nwpu-resisc-45": "nwpu-resisc45",
}

#: Datasets whose folder names go through :func:`plain_words` (no fixed table).
_RULE_DATASETS = ("millionaid",)


def known_datasets() -> list[str]:
    """Names of the datasets whose class names rsvit knows (listed, or by rule), sorted."""
    return sorted([*DATASET_CLASS_NAMES, *_RULE_DATASETS])


def plain_words(folder_name: str) -> str:
    """``"dense_residential"`` / ``"BareLand"`` / ``"a/b"`` -> ``"dense residential"`` / ``"bare land"``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", folder_name)
    spaced = re.sub(r"[_/\-]+", " ", spaced)
    return " ".join(spaced.lower().split())


def dataset_for_classes(classes: Sequence[str]) -> str | None:
    """The known dataset whose folder names are exactly ``classes`` (any order), else ``None``."""
    wanted = set(classes)
    for name, table in DATASET_CLASS_NAMES.items():
        if set(table) == wanted:
            return name
    return None


def _canonical(dataset: str) -> str:
    key = dataset.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASET_CLASS_NAMES and key not in _RULE_DATASETS:
        raise UnknownClassesError(
            f"unknown dataset {dataset!r} for class names; known: {', '.join(known_datasets())} "
            "(or leave it out to use the folder names as plain words)"
        )
    return key


def readable_names(
    classes: Sequence[str], dataset: str | None = None, overrides: Mapping[str, str] | None = None
) -> list[str]:
    """Prompt names for ``classes`` (folder names), in the same order.

    With ``dataset``, every folder name must belong to that dataset (a subset is fine: split files may
    hold fewer classes); without, a dataset whose folder names match exactly is used, else
    :func:`plain_words`. ``overrides`` (folder name -> text) win over both.
    """
    overrides = dict(overrides or {})
    if dataset is not None:
        key = _canonical(dataset)
        table = DATASET_CLASS_NAMES.get(key)
        if table is not None:
            unknown = [c for c in classes if c not in table and c not in overrides]
            if unknown:
                raise UnknownClassesError(
                    f"classes {unknown} are not {key} classes; {key} has {', '.join(table)}. "
                    "Check the dataset name, or leave it out to use the folder names as plain words"
                )
    else:
        key = dataset_for_classes(classes)
        table = DATASET_CLASS_NAMES.get(key) if key is not None else None
    table = table or {}
    return [overrides.get(c) or table.get(c) or plain_words(c) for c in classes]
