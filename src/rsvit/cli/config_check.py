"""Checks a YAML config before LightningCLI reads it, so a malformed file gets a message, not a traceback.

LightningCLI reports a YAML syntax error as a parser traceback and an empty file as "Unexpected config";
here each problem is named with the file, the line and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "read_config"]

_SECTIONS = "model:, data: and trainer:"


class ConfigError(ValueError):
    """A config file that is not a readable YAML mapping."""


def _where(path: Path, mark: Any) -> str:
    return f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; :class:`ConfigError` says what is wrong and where."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    raw = path.read_bytes()
    try:
        if b"\x00" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not a text YAML file (binary content at byte {err.start}); give a YAML config"
        ) from None
    try:
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
        hint = (
            "use plain YAML values (no !tags)"
            if isinstance(err, yaml.constructor.ConstructorError)
            else "check the indentation (spaces, same depth for keys of one mapping) and the quoting"
        )
        raise ConfigError(f"{_where(path, mark)}: {problem}; {hint}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if config is None:
        raise ConfigError(f"{path} is empty; a config is a YAML mapping with {_SECTIONS} sections")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path}, line 1: the top level is a {type(config).__name__}, not a mapping; a config is a "
            f"YAML mapping with {_SECTIONS} sections (no leading '- ')"
        )
    return config
