"""A new loss reaches every name list through the registry, and its function through functional's exports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import lightning_contloss.functional as CF
from lightning_contloss import losses
from lightning_contloss.compare import runner, spec
from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.cosine import _cosine_loss_tokens
from lightning_contloss.losses import ContinuousLoss, loss_names, make_loss, register_loss


class _ScaledCosine(ContinuousLoss):
    """A throwaway loss, ``scale · (1 − cos)``, standing for the next loss a contributor adds."""

    def __init__(self, targets: torch.Tensor | None = None, *, scale: float = 1.0, **kwargs: object) -> None:
        super().__init__(targets, **kwargs)  # type: ignore[arg-type]
        self.scale = scale

    def _tokens(self, pred: torch.Tensor, ids: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, Batch]:
        per_token, batch = _cosine_loss_tokens(pred, ids, table, ignore_index=self.ignore_index)
        return self.scale * per_token, batch


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    # A copy of the registry, so the throwaway name is gone again after the test.
    monkeypatch.setattr(losses, "_REGISTRY", dict(losses._REGISTRY))
    register_loss("scaledcosine")(_ScaledCosine)
    return "scaledcosine"


def test_registering_a_loss_makes_it_a_choice_everywhere(registered: str) -> None:
    assert loss_names()[-1] == registered
    loss = make_loss(registered, scale=0.5, temperature=0.05, ignore_index=-100)  # temperature is not its
    assert isinstance(loss, _ScaledCosine) and loss.scale == 0.5 and loss.ignore_index == -100
    table, pred, ids = torch.eye(3), torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0])
    expected = 0.5 * CF.cosine_loss(pred, ids, table)
    torch.testing.assert_close(loss.bind(table)(pred, ids), expected)
    # compare's command line: the run parses, the help lists it, LOSSES names it.
    assert spec.parse_run(f"linear:{registered}:random").loss == registered
    assert registered in runner.build_parser().format_help()
    assert registered in spec.LOSSES


def test_an_unregistered_name_is_refused_with_the_choices() -> None:
    assert "scaledcosine" not in loss_names()
    with pytest.raises(ValueError, match=r"unknown loss 'scaledcosine'.*choose one of cosine"):
        spec.parse_run("linear:scaledcosine:random")
    with pytest.raises(ValueError, match="unknown loss 'scaledcosine'"):
        make_loss("scaledcosine")


def test_functional_exports_every_public_name_of_its_modules() -> None:
    # functional/__init__.py imports each module's names by hand (so type checkers and the API
    # docs see them); this is what makes a forgotten line fail.
    modules = [m.name for m in pkgutil.iter_modules(CF.__path__) if not m.name.startswith("_")]
    assert {"cosine", "info_nce", "vmf"} <= set(modules)
    for name in modules:
        module = importlib.import_module(f"{CF.__name__}.{name}")
        for public in module.__all__:
            assert getattr(CF, public, None) is getattr(module, public), f"{name}.{public}"
            assert public in CF.__all__, f"{name}.{public} is missing from functional.__all__"
