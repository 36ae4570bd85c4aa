"""A new loss reaches every name list through the registry, and its function through functional's exports.

The throwaway loss below is written in this one file, as a contributor's would be in
``losses/<name>.py``: registering it is all it takes for ``make_loss``, ``build_loss``,
``ContinuousLM``, the translation model and ``compare`` to find it.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import lightning_contloss.functional as CF
from lightning_contloss.compare import runner, spec
from lightning_contloss.examples import ContinuousLM, ContinuousTranslator
from lightning_contloss.examples.continuous_lm import build_loss
from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.cosine import _cosine_loss_tokens
from lightning_contloss.losses import ContinuousLoss, loss_names, loss_options, make_loss, register_loss
from lightning_contloss.losses import registry as loss_registry


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
    monkeypatch.setattr(loss_registry, "_REGISTRY", dict(loss_registry._REGISTRY))
    register_loss("scaledcosine")(_ScaledCosine)
    return "scaledcosine"


def test_registering_a_loss_makes_it_a_choice_everywhere(registered: str) -> None:
    assert loss_names()[-1] == registered and loss_options(registered) == ("scale",)
    loss = make_loss(registered, scale=0.5, ignore_index=-100)
    assert isinstance(loss, _ScaledCosine) and loss.scale == 0.5 and loss.ignore_index == -100
    with pytest.raises(ValueError, match=r"\(_ScaledCosine\) takes no option 'temperature'; it takes scale"):
        make_loss(registered, scale=0.5, temperature=0.05)
    table, pred, ids = torch.eye(3), torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0])
    expected = 0.5 * CF.cosine_loss(pred, ids, table)
    torch.testing.assert_close(loss.bind(table)(pred, ids), expected)
    # compare's command line: the run parses, the help lists it, LOSSES names it.
    assert spec.parse_run(f"linear:{registered}:random").loss == registered
    assert registered in runner.build_parser().format_help()
    assert registered in spec.LOSSES
    # the example models: build_loss, ContinuousLM and the translation model take the name.
    built = build_loss(registered, ignore_index=0, cosine_weight=0.1)
    assert isinstance(built.metric_a, _ScaledCosine) and built.metric_a.ignore_index == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"'scaledcosine' takes no option margin; .* loss options it takes none"):
        build_loss(registered, margin=0.2)
    lm = ContinuousLM(30, d_model=8, n_layers=1, n_heads=2, dim_feedforward=16, target_dim=4, loss=registered)
    assert isinstance(lm.continuous_loss_fn, _ScaledCosine)
    tiny = {"d_model": 8, "n_heads": 2, "dim_feedforward": 16, "target_dim": 4}
    translator = ContinuousTranslator(30, 20, n_encoder_layers=1, n_decoder_layers=1, loss=registered, **tiny)
    assert isinstance(translator.continuous_loss_fn, _ScaledCosine)


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


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("cosine", {"temperature": 0.05}, "'cosine' takes no option temperature; .* loss options it takes none"),
        (
            "vmf",
            {"margin": 0.2, "num_negatives": 64},
            "the loss 'vmf' takes no options num_negatives, margin; of the command line's loss options it takes "
            "vmf_lambda1, vmf_lambda2, vmf_regularizer, vmf_lambda, vmf_kappa_min",
        ),
        ("infonce", {"beta": 1.5}, "the loss 'infonce' takes no option beta; .* it takes temperature, learn_temp"),
        ("energy", {"learn_temperature": False}, "takes no option learn_temperature; .* it takes beta$"),
        ("cosine", {"cosine_weight": 0.5}, "cosine_weight adds a cosine term"),
    ],
)
def test_build_loss_refuses_options_the_loss_does_not_take(name: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(name, **options)  # type: ignore[arg-type]


def test_build_loss_leaves_unset_options_at_the_loss_defaults() -> None:
    from lightning_contloss.losses import InfoNCELoss, MaxMarginLoss, SynMarginLoss

    assert isinstance(build_loss("cosine"), ContinuousLoss)
    infonce = build_loss("infonce", temperature=0.05)
    assert isinstance(infonce, InfoNCELoss) and infonce.temperature == 0.05
    assert infonce.num_negatives == InfoNCELoss().num_negatives and infonce.sampler == "uniform"
    margin = build_loss("maxmargin", margin=0.3)
    assert isinstance(margin, MaxMarginLoss) and margin.margin == 0.3 and margin.negatives == "informative"
    syn = build_loss("synmargin", margin=0.2, synthetic="difference")
    assert isinstance(syn, SynMarginLoss) and (syn.margin, syn.synthetic) == (0.2, "difference")


def test_the_example_model_refuses_an_option_its_loss_does_not_take() -> None:
    tiny = {"d_model": 8, "n_layers": 1, "n_heads": 2, "dim_feedforward": 16, "target_dim": 4}
    with pytest.raises(ValueError, match="the loss 'cosine' takes no option temperature"):
        ContinuousLM(30, loss="cosine", temperature=0.05, **tiny)
    lm = ContinuousLM(30, loss="infonce", **tiny)  # the default num_negatives, capped at the vocabulary
    assert lm.continuous_loss_fn.num_negatives == 30  # type: ignore[union-attr]


def test_losses_exports_every_public_name_of_its_modules() -> None:
    # losses/__init__.py imports each loss module by hand: that import registers the loss, and a
    # forgotten line would leave it out of every name list. This makes one fail.
    import lightning_contloss.losses as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__)]
    assert {"base", "registry", "cosine", "energy", "vmf"} <= set(modules)
    for name in modules:
        module = importlib.import_module(f"{package.__name__}.{name}")
        for public in module.__all__:
            assert getattr(package, public, None) is getattr(module, public), f"{name}.{public}"
            assert public in package.__all__, f"{name}.{public} is missing from losses.__all__"
    registered = {type(make_loss(name)) for name in loss_names()}
    assert registered <= {getattr(package, public) for public in package.__all__}
