"""The LightningCLI configs shipped inside the package, and ``--config NAME`` resolving to them.

After ``pip install`` there is no ``configs/`` folder beside the user; the configs live in
``lightning_contloss/configs/`` and ``--config ptb_cosine.yaml`` (or ``ptb_cosine``) finds them.
A file of that name in the working folder is the user's own and wins.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["UnknownConfigError", "config_names", "config_path", "resolve_config_args"]

_FLAGS = ("--config", "-c")
# A value that names a file (no spaces, colons or braces); anything else is an inline YAML/JSON
# config, which jsonargparse reads itself.
_FILE_LIKE = re.compile(r"[\w.\-/\\~]+")


class UnknownConfigError(ValueError):
    """``--config`` names neither a file nor a packaged config; the message lists the packaged ones."""


def _folder() -> Path:
    return Path(str(importlib.resources.files("lightning_contloss") / "configs"))


def config_names() -> list[str]:
    """The packaged configs' file names, sorted.

    Example:
        >>> "ptb_cosine.yaml" in config_names()
        True
    """
    return sorted(p.name for p in _folder().glob("*.yaml"))


def config_path(name: str) -> Path | None:
    """The packaged config called ``name`` (with or without ``.yaml``), or ``None``.

    Example:
        >>> config_path("ptb_vmf").name, config_path("nothing.yaml")
        ('ptb_vmf.yaml', None)
    """
    file = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    path = _folder() / file
    return path if "/" not in name and "\\" not in name and path.is_file() else None


def _resolve(value: str) -> str:
    if not _FILE_LIKE.fullmatch(value) or Path(value).expanduser().exists():
        return value
    packaged = config_path(value)
    if packaged is not None:
        return str(packaged)
    raise UnknownConfigError(
        f"config {value!r} is neither a file nor a packaged config; pass a path, or one of "
        f"{', '.join(config_names())} by name, e.g. --config ptb_cosine.yaml"
    )


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """``args`` with each ``--config``/``-c`` value that names a packaged config replaced by its path.

    Raises:
        UnknownConfigError: a ``--config`` file name that is neither a file nor a packaged config.

    Example:
        >>> resolve_config_args(["fit", "--config", "ptb_cosine.yaml"])[2].endswith("configs/ptb_cosine.yaml")
        True
    """
    out = list(args)
    for i, arg in enumerate(out):
        if arg in _FLAGS and i + 1 < len(out):
            out[i + 1] = _resolve(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolve(arg.split("=", 1)[1])
    return out
