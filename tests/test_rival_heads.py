"""The softmax family's large-vocabulary rivals: chunked and sampled cross-entropy, adaptive softmax, CCE."""

from __future__ import annotations

import sys
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from lightning_contloss.compare.output_layers import build_output_layer, split_options
from lightning_contloss.compare.spec import OUTPUT_LAYER_OPTIONS, SOFTMAX_OPTIONS, parse_run
from lightning_contloss.examples import SoftmaxLM
from lightning_contloss.examples.adaptive_softmax import AdaptiveSoftmax, default_cutoffs
from lightning_contloss.examples.cce_softmax import CutCrossEntropySoftmax, import_cut_cross_entropy
from lightning_contloss.examples.chunked_softmax import ChunkedSoftmax
from lightning_contloss.examples.output_layer import FullSoftmax, OutputLayer
from lightning_contloss.examples.sampled_softmax import SampledSoftmax, proposal_log_probs
from lightning_contloss.functional import linear_cross_entropy, sampled_softmax_loss

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32}


def _data(n: int, h: int, v: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64)
    bias = torch.randn(v, generator=g, dtype=torch.float64)
    target = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, target


# ---------------------------------------------------------------------- chunked linear cross-entropy
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 50, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunked_cross_entropy_matches_full_loss_and_gradients(chunk_size: int, reduction: str) -> None:
    hidden, weight, bias, target = _data(23, 5, 50, seed=chunk_size)
    target[[2, 9]] = -100
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ref_leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    loss = linear_cross_entropy(*leaves, target, reduction=reduction, chunk_size=chunk_size)  # type: ignore[arg-type]
    h, w, b = ref_leaves
    ref = F.cross_entropy(h @ w.T + b, target, reduction=reduction)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.linspace(0.5, 2.0, 23, dtype=torch.float64) if reduction == "none" else torch.tensor(1.0)
    grads = torch.autograd.grad((loss * upstream).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), ref_leaves)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_chunked_cross_entropy_float32_without_bias() -> None:
    hidden, weight, _, target = (t.float() if t.is_floating_point() else t for t in _data(64, 8, 300, seed=3))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, None, target, chunk_size=128)
    ref = F.cross_entropy(hidden @ weight.T, target)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    loss.backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    F.cross_entropy(h2 @ w2.T, target).backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 12), v=st.integers(2, 40), chunk=st.integers(1, 45), seed=st.integers(0, 1000))
def test_chunked_cross_entropy_property(n: int, v: int, chunk: int, seed: int) -> None:
    hidden, weight, bias, target = _data(n, 3, v, seed)
    got = linear_cross_entropy(hidden, weight, bias, target, reduction="none", chunk_size=chunk)
    torch.testing.assert_close(got, F.cross_entropy(hidden @ weight.T + bias, target, reduction="none"))


def test_chunked_cross_entropy_all_ignored_is_nan_like_torch() -> None:
    hidden, weight, bias, _ = _data(4, 3, 10, seed=0)
    target = torch.full((4,), -100)
    assert torch.isnan(linear_cross_entropy(hidden, weight, bias, target))
    assert torch.isnan(F.cross_entropy(hidden @ weight.T + bias, target))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"target": torch.tensor([0, 10, 1, 2])}, "outside 0..9"),
        ({"hidden": torch.randn(4, 2)}, "features"),
        ({"target": torch.tensor([0.0, 1, 2, 3])}, "int64"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_chunked_cross_entropy_rejects_bad_input(kwargs: dict, word: str) -> None:
    args = {"hidden": torch.randn(4, 3), "weight": torch.randn(10, 3), "bias": None, "target": torch.arange(4)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        linear_cross_entropy(**args)


# ---------------------------------------------------------------------- sampled softmax
def _brute_sampled(hidden, weight, bias, target, negatives, log_q):  # type: ignore[no-untyped-def]
    """One token at a time, candidates in a Python list: the definition, independently."""
    out = []
    for h, y in zip(hidden, target, strict=True):
        logits = [float(h @ weight[y] + bias[y] - log_q[y])]
        logits += [float(h @ weight[c] + bias[c] - log_q[c]) for c in negatives.tolist() if c != int(y)]
        out.append(torch.tensor(logits, dtype=torch.float64).logsumexp(0) - logits[0])
    return torch.stack(out)


def test_sampled_softmax_matches_brute_force() -> None:
    hidden, weight, bias, target = _data(9, 4, 30, seed=1)
    negatives = torch.tensor([3, 3, 7, 0, 29, int(target[0])])
    log_q = torch.randn(30, dtype=torch.float64)
    got = sampled_softmax_loss(hidden, weight, bias, target, negatives, log_q, reduction="none")
    torch.testing.assert_close(got, _brute_sampled(hidden, weight, bias, target, negatives, log_q))


def test_sampled_softmax_head_with_k_at_least_v_is_exact_cross_entropy() -> None:
    torch.manual_seed(0)
    head = SampledSoftmax(6, 25, num_negatives=25)
    hidden, target = torch.randn(11, 6), torch.randint(0, 25, (11,))
    target[4] = -100
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    loss = head.loss(h1, target, -100)
    ref = F.cross_entropy(head(h2), target)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(h1.grad, h2.grad)


def test_sampled_softmax_estimate_approaches_full_loss_with_many_samples() -> None:
    # Sampling with the logQ correction: the mean over draws lands near the exact loss.
    torch.manual_seed(0)
    head = SampledSoftmax(4, 200, num_negatives=150, sampler="uniform")
    hidden, target = torch.randn(32, 4), torch.randint(0, 200, (32,))
    exact = float(F.cross_entropy(head(hidden), target).detach())
    estimate = sum(float(head.loss(hidden, target, -100)) for _ in range(50)) / 50
    assert abs(estimate - exact) < 0.1 * exact


def test_proposals() -> None:
    counts = torch.tensor([1.0, 100.0, 10.0, 0.0])
    for kind in ("uniform", "log_uniform", "unigram"):
        q = proposal_log_probs(kind, 4, counts).exp()
        torch.testing.assert_close(q.sum(), torch.tensor(1.0, dtype=torch.float64))
    log_uniform = proposal_log_probs("log_uniform", 4, counts)
    assert log_uniform.argsort(descending=True).tolist() == [1, 2, 0, 3]
    torch.testing.assert_close(log_uniform[1].exp(), torch.tensor(2.0).log().double() / torch.tensor(5.0).log())
    with pytest.raises(ValueError, match="unknown sampler"):
        proposal_log_probs("zipf", 4)
    with pytest.raises(ValueError, match="needs counts"):
        SampledSoftmax(4, 10, sampler="unigram")
    with pytest.raises(ValueError, match="num_negatives"):
        SampledSoftmax(4, 10, num_negatives=0)


# ---------------------------------------------------------------------- adaptive softmax
def test_adaptive_softmax_log_probs_sum_to_one_and_match_its_loss() -> None:
    torch.manual_seed(0)
    counts = torch.randint(0, 100, (60,)).float()
    head = AdaptiveSoftmax(8, 60, counts=counts)
    hidden, target = torch.randn(7, 8), torch.randint(0, 60, (7,))
    log_p = head(hidden)
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(7), atol=1e-5, rtol=0)
    nll = -log_p.gather(1, target[:, None]).mean()
    torch.testing.assert_close(head.loss(hidden, target, -100), nll, atol=1e-5, rtol=1e-5)


def test_adaptive_softmax_ranks_by_frequency_and_takes_the_prior() -> None:
    counts = torch.zeros(40)
    counts[39], counts[38] = 1000.0, 500.0  # the two most frequent ids are the last ones
    head = AdaptiveSoftmax(4, 40, cutoffs=[2, 10], counts=counts)
    assert head.order[:2].tolist() == [39, 38]
    smoothed = counts + 1
    log_prior = (smoothed / smoothed.sum()).log()
    head.init_prior(log_prior)
    with torch.no_grad():
        for layer in head.adaptive.tail:
            layer[1].weight.zero_()
    # With the hidden weights out of the way the distribution is the prior's shortlist and cluster mass.
    log_p = head(torch.zeros(1, 4))[0]
    torch.testing.assert_close(log_p[[39, 38]], log_prior[[39, 38]].float(), atol=1e-5, rtol=0)


def test_default_cutoffs_and_bad_cutoffs() -> None:
    assert default_cutoffs(400_003) == [20000, 100001]
    assert default_cutoffs(10) == [1, 2]
    with pytest.raises(ValueError, match="strictly increasing"):
        AdaptiveSoftmax(4, 40, cutoffs=[10, 5])


# ---------------------------------------------------------------------- cut-cross-entropy
def test_cce_head_says_why_when_the_package_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)
    with pytest.raises(ImportError, match="cut-cross-entropy does not import here"):
        CutCrossEntropySoftmax(4, 10)


def test_cce_head_matches_cross_entropy() -> None:
    pytest.importorskip("cut_cross_entropy")
    import_cut_cross_entropy()
    head = CutCrossEntropySoftmax(8, 30, impl="torch_compile")
    hidden, target = torch.randn(5, 8), torch.randint(0, 30, (5,))
    torch.testing.assert_close(head.loss(hidden, target, -100), F.cross_entropy(head(hidden), target))


# ---------------------------------------------------------------------- SoftmaxLM with each output layer
@pytest.mark.parametrize(
    "layer",
    [
        lambda: FullSoftmax(16, 30),
        lambda: ChunkedSoftmax(16, 30, chunk_size=7),
        lambda: SampledSoftmax(16, 30, num_negatives=8),
        lambda: AdaptiveSoftmax(16, 30, cutoffs=[5, 15]),
    ],
)
def test_each_rival_trains_under_a_lightning_trainer(layer) -> None:  # type: ignore[no-untyped-def]
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.manual_seed(0)
    head = layer()
    assert isinstance(head, OutputLayer)
    lm = SoftmaxLM(30, **TINY, output_layer=head, warmup_steps=1, lr=1e-2)
    lm.init_output_bias(torch.arange(30.0))
    x = torch.randint(0, 30, (16, 6))
    y = (x + 1) % 30  # learnable: the next id
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(
        max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )
    before = float(F.cross_entropy(lm(x).flatten(0, 1), y.flatten()))
    trainer.fit(lm, loader, loader)
    metrics = trainer.validate(lm, loader, verbose=False)[0]
    assert metrics["val/loss"] < before
    assert lm.predict_ids(x).shape == x.shape
    assert lm.model.lm_head is head


def test_softmax_lm_rejects_a_layer_without_loss() -> None:
    with pytest.raises(ValueError, match="OutputLayer"):
        SoftmaxLM(30, **TINY, output_layer=torch.nn.Linear(16, 30))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- compare's heads
@pytest.mark.parametrize(
    ("text", "kwargs", "label"),
    [
        ("adaptive", {}, "adaptive softmax · CE"),
        ("sampled:ce", {}, "sampled softmax · CE"),
        ("sampled:ce:num_negatives=8192,sampler=uniform", {"num_negatives": 8192, "sampler": "uniform"},
         "sampled softmax · CE (num_negatives=8192, sampler=uniform)"),
        ("chunked:ce:chunk_size=4096,lr=0.002", {"chunk_size": 4096, "lr": 0.002},
         "chunked softmax · CE (chunk_size=4096, lr=0.002)"),
        ("cce", {}, "cut-cross-entropy · CE"),
    ],
)
def test_parse_run_accepts_rival_heads(text: str, kwargs: dict, label: str) -> None:
    spec = parse_run(text)
    assert not spec.continuous and spec.loss == "ce" and spec.targets == "-"
    assert spec.model_kwargs == kwargs and spec.label == label


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("adaptive:cosine:random", "cross-entropy only"),
        ("sampled:ce:chunk_size=4", "unknown option 'chunk_size'.*num_negatives"),
        ("chunked:ce:chunk_size=4:x", "must read chunked, chunked:ce"),
        ("sampeld", "unknown head 'sampeld'.*sampled"),
    ],
)
def test_parse_run_rejects_bad_rival_runs(text: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        parse_run(text)


def test_rival_options_are_arguments_of_their_classes() -> None:
    import inspect

    assert set(SOFTMAX_OPTIONS) <= set(inspect.signature(SoftmaxLM.__init__).parameters)
    classes = {"adaptive": AdaptiveSoftmax, "sampled": SampledSoftmax, "chunked": ChunkedSoftmax,
               "cce": CutCrossEntropySoftmax, "softmax": FullSoftmax}
    for head, options in OUTPUT_LAYER_OPTIONS.items():
        assert set(options) <= set(inspect.signature(classes[head].__init__).parameters), head


def test_worker_builds_each_rival() -> None:
    from lightning_contloss.compare.worker import build_model

    counts = torch.arange(100.0)
    for text, cls in (("adaptive", AdaptiveSoftmax), ("sampled:ce:num_negatives=16", SampledSoftmax),
                      ("chunked:ce:chunk_size=30,lr=0.002", ChunkedSoftmax), ("softmax", FullSoftmax)):
        model = build_model(parse_run(text), 100, TINY, None, counts)
        assert type(model.model.lm_head) is cls
    assert build_model(parse_run("chunked:ce:chunk_size=30,lr=0.002"), 100, TINY).hparams.lr == 0.002
    assert split_options("chunked", {"chunk_size": 3, "lr": 1.0}) == ({"lr": 1.0}, {"chunk_size": 3})
    with pytest.raises(ValueError, match="unknown softmax-family head"):
        build_output_layer("linear", 4, 10)
