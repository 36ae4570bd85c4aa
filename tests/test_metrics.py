"""Metrics and the vMF-induced vocabulary distribution, checked against brute force and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special, stats

from lightning_contloss import TargetEmbeddings
from lightning_contloss.functional.vmf_distribution import (
    fit_kappa,
    sample_from_logits,
    vmf_log_partition,
    vmf_log_prob,
    vmf_sample,
)
from lightning_contloss.metrics import (
    BrierLM,
    DecodingRecall,
    NeighborAccuracy,
    VMFPerplexity,
    brier_lm,
    decoding_recall,
    neighbor_accuracy,
    vmf_perplexity,
)


def brute_logits(pred: torch.Tensor, table: torch.Tensor, kappa: float | None = None) -> np.ndarray:
    """κ·cos(ê, e_w) for every pair, in float64 numpy: the full [N, V] matrix the metric avoids."""
    p = pred.double().numpy()
    t = table.double().numpy()
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    norms = np.linalg.norm(p, axis=1, keepdims=True)
    unit = p / np.maximum(norms, 1e-12)
    k = norms if kappa is None else kappa
    return k * unit @ t.T


def problem(n: int = 40, v: int = 30, d: int = 8, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(v, d, generator=g) * (0.5 + torch.rand(v, 1, generator=g))  # not unit-norm
    pred = torch.randn(n, d, generator=g) * scale
    target = torch.randint(0, v, (n,), generator=g)
    return pred, target, table


# ---------------------------------------------------------------- vMF-induced distribution
@pytest.mark.parametrize("kappa", [None, 0.0, 7.5])
def test_log_partition_and_log_prob_match_scipy(kappa: float | None) -> None:
    pred, target, table = problem()
    logits = brute_logits(pred, table, kappa)
    log_z = vmf_log_partition(pred, table, kappa=kappa, chunk_size=7)
    np.testing.assert_allclose(log_z.numpy(), special.logsumexp(logits, axis=1), rtol=1e-5, atol=1e-5)
    logp = vmf_log_prob(pred, target, table, kappa=kappa, chunk_size=7)
    expected = special.log_softmax(logits, axis=1)[np.arange(len(target)), target.numpy()]
    np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_log_prob_with_exclusion_and_leading_dims() -> None:
    pred, target, table = problem(n=24)
    exclude = torch.zeros(table.shape[0], dtype=torch.bool)
    exclude[[0, 5, 29]] = True
    target[target == 0] = 1
    target[3] = 5  # an excluded target has probability 0
    logp = vmf_log_prob(pred.view(4, 6, -1), target.view(4, 6), table, exclude_mask=exclude, chunk_size=4)
    assert logp.shape == (4, 6)
    logits = brute_logits(pred, table)
    logits[:, exclude.numpy()] = -np.inf
    expected = special.log_softmax(logits, axis=1)[np.arange(24), target.numpy()]
    assert math.isinf(float(logp.view(-1)[3])) and float(logp.view(-1)[3]) < 0
    keep = np.arange(24) != 3
    np.testing.assert_allclose(logp.view(-1).numpy()[keep], expected[keep], rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    v=st.integers(1, 40),
    d=st.integers(1, 6),
    chunk=st.integers(1, 50),
    scale=st.floats(0.0, 200.0),
    seed=st.integers(0, 2**16),
)
def test_chunked_logsumexp_is_chunk_size_invariant(n: int, v: int, d: int, chunk: int, scale: float, seed: int) -> None:
    pred, _, table = problem(n, v, d, seed, scale)
    one = vmf_log_partition(pred, table, chunk_size=chunk)
    whole = vmf_log_partition(pred, table, chunk_size=v)
    torch.testing.assert_close(one, whole, rtol=1e-5, atol=1e-5)
    assert bool(torch.isfinite(one).all())  # large κ must not overflow
    # logsumexp is bounded by the max score and the max plus log V.
    top = torch.as_tensor(brute_logits(pred, table).max(axis=1), dtype=torch.float32)
    assert bool((one >= top - 1e-4).all()) and bool((one <= top + math.log(v) + 1e-4).all())


def test_input_errors_say_what_to_do() -> None:
    pred, target, table = problem()
    with pytest.raises(ValueError, match=r"out_features=targets\.dim"):
        vmf_log_partition(pred[:, :5], table)
    with pytest.raises(ValueError, match="chunk_size"):
        vmf_log_partition(pred, table, chunk_size=0)
    with pytest.raises(ValueError, match="exclude_mask"):
        vmf_log_partition(pred, table, exclude_mask=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="every row"):
        vmf_log_partition(pred, table, exclude_mask=torch.ones(table.shape[0], dtype=torch.bool))
    with pytest.raises(ValueError, match="out of range"):
        vmf_log_prob(pred, target + 100, table)
    with pytest.raises(ValueError, match="kappa"):
        vmf_log_prob(pred, target, table, kappa=-1.0)


@pytest.mark.parametrize("chunk_size", [256, 300, 4096])
def test_vmf_sample_matches_brute_force_distribution(chunk_size: int) -> None:
    # V spans two 256-row sampling blocks plus a partial one, with excluded rows at the edges;
    # the chunk sizes give three chunks, two chunks (300 rounds up to 512) and one.
    g = torch.Generator().manual_seed(1)
    v, d, draws = 700, 6, 20_000
    table = torch.randn(v, d, generator=g)
    pred = torch.randn(1, d, generator=g) * 4.0
    exclude = torch.zeros(v, dtype=torch.bool)
    exclude[[0, 255, 256, 699]] = True
    samples = vmf_sample(pred.expand(draws, d), table, 1, exclude_mask=exclude, generator=g, chunk_size=chunk_size)
    samples = samples.view(-1)
    logits = brute_logits(pred, table)[0]
    logits[exclude.numpy()] = -np.inf
    probs = special.softmax(logits)
    counts = np.bincount(samples.numpy(), minlength=v)
    assert counts[exclude.numpy()].sum() == 0
    # chi-square over the rows expected >= 5 times, the rest pooled into one cell
    big = probs * draws >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(probs[big], probs[~big].sum()) * draws
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_vmf_sample_shapes_determinism_and_kappa() -> None:
    pred, _, table = problem(n=12)
    a = vmf_sample(pred.view(3, 4, -1), table, 2, generator=torch.Generator().manual_seed(3))
    b = vmf_sample(pred.view(3, 4, -1), table, 2, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 3, 4) and a.dtype == torch.long and torch.equal(a, b)
    # a huge κ makes the draw the nearest row by cosine, whatever the noise
    nearest = torch.as_tensor(brute_logits(pred, table).argmax(axis=1))
    hot = vmf_sample(pred, table, 3, kappa=1e4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hot, nearest.expand(3, -1))
    assert vmf_sample(pred[:0], table, 2).shape == (2, 0)


def test_sample_from_logits_distribution() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.tensor([0.0, 1.0, -float("inf"), 2.0, -1.0])
    s = sample_from_logits(logits.expand(40_000, 5), 1, generator=g).view(-1)
    counts = np.bincount(s.numpy(), minlength=5)
    probs = special.softmax(logits.double().numpy())
    assert counts[2] == 0
    keep = probs > 0
    assert stats.chisquare(counts[keep], probs[keep] * len(s)).pvalue > 1e-3
    assert sample_from_logits(torch.zeros(3, 7, 11), 4).shape == (4, 3, 7)


def test_fit_kappa_matches_scipy_minimiser() -> None:
    g = torch.Generator().manual_seed(4)
    v, d, n = 50, 8, 400
    table = F.normalize(torch.randn(v, d, generator=g), dim=-1)
    target = torch.randint(0, v, (n,), generator=g)
    # predictions near their target, with arbitrary norms a cosine loss would leave behind
    pred = (table[target] + 0.7 * torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g) * 9
    exclude = torch.zeros(v, dtype=torch.bool)
    exclude[[1, 2]] = True
    target[(target == 1) | (target == 2)] = 3
    cos = brute_logits(pred, table, kappa=1.0)

    def nll(k: float) -> float:
        logits = np.where(exclude.numpy(), -np.inf, k * cos)
        return float(-special.log_softmax(logits, axis=1)[np.arange(n), target.numpy()].mean())

    ref = optimize.minimize_scalar(nll, bounds=(0.0, 200.0), method="bounded", options={"xatol": 1e-8}).x
    kappa = fit_kappa(pred, target, table, exclude_mask=exclude, chunk_size=16)
    assert kappa == pytest.approx(ref, rel=1e-4)
    assert nll(kappa) <= nll(ref) + 1e-9
    # padding is skipped: appending ignored tokens changes nothing
    padded = fit_kappa(
        torch.cat([pred, torch.randn(5, d)]),
        torch.cat([target, torch.full((5,), -100)]),
        table,
        exclude_mask=exclude,
        ignore_index=-100,
    )
    assert padded == pytest.approx(kappa, rel=1e-6)


@pytest.mark.parametrize("kappa", [0.0, 3.0, 80.0, 2000.0])
@pytest.mark.parametrize("cached", [True, False])
def test_fit_kappa_newton_moments_match_float64(kappa: float, cached: bool) -> None:
    """The in-place Newton pass (shared max, float32 buffer) gives the float64 mean and variance of the gap."""
    from lightning_contloss.functional.vmf_distribution import _gap_chunks, _nll_grad_hess

    g = torch.Generator().manual_seed(7)
    v, d, n = 90, 12, 40
    table = F.normalize(torch.randn(v, d, generator=g), dim=-1)
    target = torch.randint(3, v, (n,), generator=g)
    query = F.normalize(table[target] + 0.5 * torch.randn(n, d, generator=g), dim=-1)
    target_cos = (query * table[target]).sum(-1)
    exclude = torch.zeros(v, dtype=torch.bool)
    exclude[:3] = True  # the first chunk of 16 rows holds excluded rows, the last chunk is partial
    gaps = list(_gap_chunks(query, target_cos, table, exclude, 16)) if cached else None
    grad, hess = _nll_grad_hess(query, target_cos, table, exclude, kappa, 16, gaps)
    gap = query.double() @ table.double().T - target_cos.double()[:, None]
    p = torch.softmax((kappa * gap).masked_fill(exclude, float("-inf")), dim=-1)
    mean = (p * gap).sum(-1)
    var = (p * gap**2).sum(-1) - mean**2
    assert grad == pytest.approx(float(mean.mean()), rel=1e-5, abs=1e-7)
    assert hess == pytest.approx(float(var.mean()), rel=1e-4, abs=1e-7)


@pytest.mark.slow
def test_fit_kappa_at_a_realistic_size_matches_float64() -> None:
    """20k rows in the default chunks: the float32 sums leave the moments and κ̂ within float64's reach."""
    from lightning_contloss.functional.vmf_distribution import _gap_chunks, _nll_grad_hess

    g = torch.Generator().manual_seed(11)
    v, d, n = 20_000, 64, 96
    table = F.normalize(torch.randn(v, d, generator=g), dim=-1)
    target = torch.randint(0, v, (n,), generator=g)
    # Noisy enough that the target is often not the nearest row: an NLL with an interior minimum.
    pred = table[target] + 1.5 * torch.randn(n, d, generator=g) / d**0.5
    query = F.normalize(pred, dim=-1)
    target_cos = (query * table[target]).sum(-1)
    gap = query.double() @ table.double().T - target_cos.double()[:, None]
    gaps = list(_gap_chunks(query, target_cos, table, None, 8192))
    for kappa in (5.0, 40.0):
        grad, hess = _nll_grad_hess(query, target_cos, table, None, kappa, 8192, gaps)
        p = torch.softmax(kappa * gap, dim=-1)
        mean = (p * gap).sum(-1)
        # float32 sums of 8,192 terms: about 2e-5 relative here, which moves κ̂ by about 1e-6 (below).
        assert grad == pytest.approx(float(mean.mean()), rel=1e-4)
        assert hess == pytest.approx(float(((p * gap**2).sum(-1) - mean**2).mean()), rel=1e-3)
    logits = gap.numpy()

    def nll(k: float) -> float:
        return float(-special.log_softmax(k * logits, axis=1)[np.arange(n), target.numpy()].mean())

    ref = optimize.minimize_scalar(nll, bounds=(0.0, 500.0), method="bounded", options={"xatol": 1e-9}).x
    kappa = fit_kappa(pred, target, table)
    assert kappa == pytest.approx(ref, rel=1e-5)
    assert nll(kappa) <= nll(ref) + 1e-9


def _fit_kappa_problem(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v, d, n = 60, 8, 300
    table = F.normalize(torch.randn(v, d, generator=g), dim=-1)
    target = torch.randint(3, v, (n,), generator=g)
    pred = (table[target] + 0.6 * torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g) * 5
    exclude = torch.zeros(v, dtype=torch.bool)
    exclude[[0, 1]] = True
    return pred, target, table, exclude


def test_fit_kappa_kept_scores_give_the_same_kappa_as_rescoring(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.functional.vmf_distribution as vd

    pred, target, table, exclude = _fit_kappa_problem()
    kept = fit_kappa(pred, target, table, exclude_mask=exclude, chunk_size=16)
    monkeypatch.setattr(vd, "_FIT_CACHE_BUDGET", 0)  # every Newton step scores the table again
    assert fit_kappa(pred, target, table, exclude_mask=exclude, chunk_size=16) == kept


@pytest.mark.parametrize("start", [1e-3, 0.5, 3.0, 40.0, 1e4])
def test_fit_kappa_warm_start_reaches_the_same_kappa(start: float) -> None:
    pred, target, table, exclude = _fit_kappa_problem()
    cos = brute_logits(pred, table, kappa=1.0)

    def nll(k: float) -> float:
        logits = np.where(exclude.numpy(), -np.inf, k * cos)
        return float(-special.log_softmax(logits, axis=1)[np.arange(len(target)), target.numpy()].mean())

    ref = optimize.minimize_scalar(nll, bounds=(0.0, 200.0), method="bounded", options={"xatol": 1e-9}).x
    cold = fit_kappa(pred, target, table, exclude_mask=exclude)
    warm = fit_kappa(pred, target, table, exclude_mask=exclude, kappa_init=start)
    assert warm == pytest.approx(cold, rel=1e-5)
    assert warm == pytest.approx(ref, rel=1e-4)


def test_fit_kappa_warm_start_keeps_the_uniform_and_cap_answers() -> None:
    table = torch.eye(3)
    assert fit_kappa(-torch.eye(3), torch.arange(3), table, kappa_init=50.0) == 0.0
    assert fit_kappa(torch.eye(3), torch.arange(3), table, kappa_max=5.0, kappa_init=50.0) == 5.0
    with pytest.raises(ValueError, match="kappa_init"):
        fit_kappa(torch.eye(3), torch.arange(3), table, kappa_init=0.0)


def test_fit_kappa_edges() -> None:
    table = torch.eye(3)
    pred = -torch.eye(3)  # every prediction points away from its target: uniform is best
    assert fit_kappa(pred, torch.arange(3), table) == 0.0
    # always right: the NLL keeps falling, so the search stops at kappa_max ...
    assert fit_kappa(torch.eye(3), torch.arange(3), table, kappa_max=5.0) == 5.0
    # ... or once the derivative, -2/(e^κ + 2), is below tol: there the NLL is within tol of 0
    kappa = fit_kappa(torch.eye(3), torch.arange(3), table, tol=1e-6)
    assert 2 / (math.exp(kappa) + 2) <= 1e-6 and kappa < 20
    with pytest.raises(ValueError, match="no tokens"):
        fit_kappa(pred, torch.full((3,), -1), table, ignore_index=-1)
    with pytest.raises(ValueError, match="exclude_mask"):
        fit_kappa(pred, torch.arange(3), table, exclude_mask=torch.tensor([True, False, False]))


# ---------------------------------------------------------------- VMFPerplexity
@pytest.mark.parametrize("kappa", [None, 4.0])
def test_vmf_perplexity_equals_full_softmax_cross_entropy(kappa: float | None) -> None:
    pred, target, table = problem(n=60, v=45)
    target[::7] = -100
    logits = torch.as_tensor(brute_logits(pred, table, kappa))
    expected = torch.exp(F.cross_entropy(logits, target, ignore_index=-100))
    metric = VMFPerplexity(ignore_index=-100, kappa=kappa, chunk_size=8)
    for part in torch.arange(60).split(13):
        metric.update(pred[part], target[part], table)
    torch.testing.assert_close(metric.compute().double(), expected, rtol=1e-5, atol=0)
    got = vmf_perplexity(pred, target, table, kappa=kappa, ignore_index=-100)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


def test_vmf_perplexity_accepts_target_embeddings_and_batched_input() -> None:
    targets = TargetEmbeddings.random(100, 16, seed=0)
    pred = torch.randn(2, 5, 16)
    target = torch.randint(0, 100, (2, 5))
    a = VMFPerplexity()
    a.update(pred, target, targets)
    b = vmf_perplexity(pred.view(10, 16), target.view(10), targets.weight)
    torch.testing.assert_close(a.compute(), b)
    batch_value = VMFPerplexity()(pred, target, targets)  # forward returns the batch value
    torch.testing.assert_close(batch_value, b)


def test_vmf_perplexity_ddp_style_merge_equals_single_run() -> None:
    pred, target, table = problem(n=50)
    whole = VMFPerplexity()
    whole.update(pred, target, table)
    left, right = VMFPerplexity(), VMFPerplexity()
    left.update(pred[:20], target[:20], table)
    right.update(pred[20:], target[20:], table)
    summed = torch.exp((left.nll_sum + right.nll_sum) / (left.total + right.total))
    left.merge_state(right)
    torch.testing.assert_close(left.compute(), whole.compute())
    torch.testing.assert_close(summed, whole.compute())


def test_vmf_perplexity_bad_input_keeps_state() -> None:
    pred, target, table = problem()
    metric = VMFPerplexity()
    metric.update(pred, target, table)
    before = (metric.nll_sum.clone(), metric.total.clone())
    exclude = torch.zeros(table.shape[0], dtype=torch.bool)
    exclude[target[0]] = True
    with pytest.raises(ValueError, match="exclude_mask removes"):
        metric.update(pred, target, table, exclude_mask=exclude)
    with pytest.raises(ValueError, match=r"out_features=targets\.dim"):
        metric.update(pred[:, :3], target, table)
    with pytest.raises(ValueError, match="target"):
        metric.update(pred, target[:5], table)
    with pytest.raises(ValueError, match="kappa"):
        VMFPerplexity(kappa=float("nan"))
    assert torch.equal(metric.nll_sum, before[0]) and torch.equal(metric.total, before[1])


def test_vmf_perplexity_with_fitted_kappa_beats_wrong_kappa() -> None:
    g = torch.Generator().manual_seed(5)
    table = F.normalize(torch.randn(80, 12, generator=g), dim=-1)
    target = torch.randint(0, 80, (300,), generator=g)
    pred = (table[target] + 0.5 * torch.randn(300, 12, generator=g)) * 0.01  # cosine-trained: tiny norm
    kappa = fit_kappa(pred, target, table)
    fitted = vmf_perplexity(pred, target, table, kappa=kappa)
    for other in (kappa / 3, kappa * 3):
        assert fitted < vmf_perplexity(pred, target, table, kappa=other)
    assert fitted < vmf_perplexity(pred, target, table)  # the raw tiny norm is near-uniform


# ---------------------------------------------------------------- NeighborAccuracy
def test_neighbor_accuracy_brute_force_ignore_and_merge() -> None:
    g = torch.Generator().manual_seed(6)
    topk = torch.randint(0, 10, (200, 5), generator=g)
    target = torch.randint(0, 10, (200,), generator=g)
    target[::9] = -1
    for k in (1, 3, 5):
        hits = [int(t) in topk[i, :k].tolist() for i, t in enumerate(target.tolist()) if t != -1]
        expected = sum(hits) / len(hits)
        assert neighbor_accuracy(topk, target, k=k, ignore_index=-1).item() == pytest.approx(expected)
        left, right = NeighborAccuracy(k=k, ignore_index=-1), NeighborAccuracy(k=k, ignore_index=-1)
        left.update(topk[:77], target[:77])
        right.update(topk[77:].view(41, 3, 5), target[77:].view(41, 3))
        left.merge_state(right)
        assert left.compute().item() == pytest.approx(expected)
    assert neighbor_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])).item() == pytest.approx(2 / 3)


def test_neighbor_accuracy_errors() -> None:
    with pytest.raises(ValueError, match="k >= 3"):
        NeighborAccuracy(k=3).update(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        NeighborAccuracy().update(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        NeighborAccuracy().update(torch.zeros(4, 1, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="positive int"):
        NeighborAccuracy(k=0)


# ---------------------------------------------------------------- DecodingRecall
def test_decoding_recall_brute_force_and_merge() -> None:
    g = torch.Generator().manual_seed(7)
    exact = torch.stack([torch.randperm(30, generator=g)[:8] for _ in range(100)])
    approx = torch.where(torch.rand(100, 8, generator=g) < 0.7, exact, torch.randint(30, 60, (100, 8), generator=g))
    approx = approx[:, torch.randperm(8, generator=g)]  # order within the top-k must not matter
    exact[0, 2:] = -1  # fewer exact results than k: recall over the ones there are
    exact[1, :] = -1  # no exact result: the query is not counted
    for k in (1, 4, 8):
        recalls = []
        for a, e in zip(approx.tolist(), exact.tolist()):
            have = [x for x in e[:k] if x >= 0]
            if have:
                recalls.append(len(set(have) & set(a[:k])) / len(have))
        expected = sum(recalls) / len(recalls)
        assert decoding_recall(approx, exact, k=k).item() == pytest.approx(expected, rel=1e-6)
        left, right = DecodingRecall(k=k), DecodingRecall(k=k)
        left.update(approx[:50], exact[:50])
        right.update(approx[50:], exact[50:])
        left.merge_state(right)
        assert left.compute().item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="k >= 9"):
        DecodingRecall(k=9).update(approx, exact)


def test_decoding_recall_skips_padding_queries() -> None:
    exact = torch.tensor([[1, 2], [3, 4], [5, 6]])
    approx = torch.tensor([[1, 2], [9, 9], [5, 0]])
    target = torch.tensor([7, -100, 8])
    metric = DecodingRecall(k=2, ignore_index=-100)
    metric.update(approx, exact, target)
    assert metric.compute().item() == pytest.approx(0.75)  # (1 + 0.5) / 2; the padded query is skipped
    assert decoding_recall(approx, exact, k=2).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one target id per query"):
        metric.update(approx, exact, target[:2])


# ---------------------------------------------------------------- BrierLM
def brute_brier(s1: torch.Tensor, s2: torch.Tensor, y: torch.Tensor, max_n: int, pad: int | None):
    """Per-order sums and counts by explicit loops over every window."""
    sums, counts = [0] * max_n, [0] * max_n
    b_size, length = y.shape
    for b, t, n in itertools.product(range(b_size), range(length), range(1, max_n + 1)):
        if t + n > length or (pad is not None and pad in y[b, t : t + n].tolist()):
            continue
        if s1.dim() == 3:
            g1, g2 = s1[b, t, :n].tolist(), s2[b, t, :n].tolist()
        else:
            g1, g2 = s1[b, t : t + n].tolist(), s2[b, t : t + n].tolist()
        ref = y[b, t : t + n].tolist()
        sums[n - 1] += (g1 == ref) + (g2 == ref) - (g1 == g2)
        counts[n - 1] += 1
    return sums, counts


@pytest.mark.parametrize("continuations", [False, True])
def test_brier_lm_matches_brute_force_with_padding(continuations: bool) -> None:
    g = torch.Generator().manual_seed(8)
    y = torch.randint(0, 3, (3, 11), generator=g)
    y[0, 4] = -1
    y[2, 9:] = -1
    shape = (3, 11, 5) if continuations else (3, 11)
    s1, s2 = torch.randint(0, 3, shape, generator=g), torch.randint(0, 3, shape, generator=g)
    metric = BrierLM(max_n=4, ignore_index=-1)
    metric.update(s1, s2, y)
    sums, counts = brute_brier(s1, s2, y, 4, -1)
    assert metric.brier_sum.tolist() == sums and metric.total.tolist() == counts
    per_order = torch.tensor(sums, dtype=torch.float64) / torch.tensor(counts)
    expected = 100 * per_order.clamp_min(0).prod() ** 0.25
    torch.testing.assert_close(metric.compute().double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(brier_lm(s1, s2, y, ignore_index=-1), metric.compute())
    torch.testing.assert_close(metric.per_order().double(), per_order.float().double())


def test_brier_lm_perfect_and_uniform_models() -> None:
    g = torch.Generator().manual_seed(9)
    y = torch.randint(0, 1000, (8, 64), generator=g)
    assert brier_lm(y, y.clone(), y).item() == 100.0
    logits = torch.zeros(8, 64, 1000)
    s1, s2 = sample_from_logits(logits, 2, generator=g)
    metric = BrierLM()
    metric.update(s1, s2, y)
    assert metric.compute().item() < 1.0
    assert abs(metric.per_order()[0].item()) < 0.01  # E[Brier-1] = 1/V for a uniform model


def test_brier_lm_teacher_forced_estimator_is_unbiased() -> None:
    # Position-wise next-token distributions that do not depend on the prefix: then the
    # teacher-forced estimate is unbiased for 2·Π p_j(y_j) − Π Σ_w p_j(w)².
    g = torch.Generator().manual_seed(10)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    y = torch.tensor([0, 1, 0])
    reps = 100_000
    logits = probs.log().expand(reps, 3, 3)
    s1, s2 = sample_from_logits(logits, 2, generator=g)
    metric = BrierLM(max_n=3)
    metric.update(s1, s2, y.expand(reps, 3))
    got = metric.per_order().double()
    p_true = probs[torch.arange(3), y].double()
    collide = (probs.double() ** 2).sum(-1)
    for n in (1, 2, 3):
        windows = range(3 - n + 1)
        expected = sum(2 * p_true[t : t + n].prod() - collide[t : t + n].prod() for t in windows) / len(windows)
        assert got[n - 1].item() == pytest.approx(expected.item(), abs=0.01)


def test_brier_lm_continuations_estimate_the_autoregressive_score() -> None:
    # A Markov model whose next token depends on the previous one. Continuation samples drawn
    # autoregressively estimate the true n-gram Brier score 2·P(y1 y2) − Σ_g P(g)²;
    # teacher-forced samples estimate the path-wise collision term instead, as documented.
    g = torch.Generator().manual_seed(11)
    first = torch.tensor([0.5, 0.5])
    trans = torch.tensor([[0.5, 0.5], [0.02, 0.98]])  # p(x2 | x1)
    y = torch.tensor([0, 0])
    reps = 100_000

    def draw() -> torch.Tensor:
        x1 = torch.multinomial(first, reps, replacement=True, generator=g)
        x2 = torch.multinomial(trans[x1], 1, generator=g).squeeze(-1)
        return torch.stack([x1, x2], dim=-1)

    # position 0 holds the continuation; position 1's 2-gram would run past the end, so its
    # continuation only enters Brier-1, which this test does not check
    tail = torch.zeros(reps, 1, 2, dtype=torch.long)
    c1, c2 = torch.cat([draw().view(reps, 1, 2), tail], 1), torch.cat([draw().view(reps, 1, 2), tail], 1)
    cont = BrierLM(max_n=2)
    cont.update(c1, c2, y.expand(reps, 2))
    joint = first.double().unsqueeze(-1) * trans.double()
    exact_ar = 2 * joint[0, 0] - (joint**2).sum()
    assert cont.per_order()[1].item() == pytest.approx(exact_ar.item(), abs=0.01)

    # teacher forcing: position 2 is drawn given the true first token y1 = 0
    t1 = torch.multinomial(first, 2 * reps, replacement=True, generator=g).view(2, reps)
    t2 = torch.multinomial(trans[0], 2 * reps, replacement=True, generator=g).view(2, reps)
    tf = BrierLM(max_n=2)
    tf.update(torch.stack([t1[0], t2[0]], -1), torch.stack([t1[1], t2[1]], -1), y.expand(reps, 2))
    tf_expected = 2 * joint[0, 0] - (first.double() ** 2).sum() * (trans[0].double() ** 2).sum()
    assert tf.per_order()[1].item() == pytest.approx(tf_expected.item(), abs=0.01)
    assert abs(tf_expected - exact_ar) > 0.05  # the two really differ here


def test_brier_lm_vmf_samples_and_merge() -> None:
    # the continuous side: two vMF draws per position from (pred, table)
    targets = TargetEmbeddings.random(200, 16, seed=1)
    y = torch.randint(0, 200, (6, 20), generator=torch.Generator().manual_seed(12))
    pred = targets.weight[y] * 50.0  # concentrated on the right row
    s1, s2 = vmf_sample(pred, targets.weight, 2, generator=torch.Generator().manual_seed(13))
    whole = BrierLM()
    whole.update(s1, s2, y)
    assert whole.compute().item() > 50.0
    left, right = BrierLM(), BrierLM()
    left.update(s1[:2], s2[:2], y[:2])
    right.update(s1[2:], s2[2:], y[2:])
    left.merge_state(right)
    torch.testing.assert_close(left.compute(), whole.compute())


def test_brier_lm_errors_and_short_sequences() -> None:
    y = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="m >= max_n=4"):
        BrierLM().update(torch.zeros(2, 5, 3, dtype=torch.long), torch.zeros(2, 5, 3, dtype=torch.long), y)
    with pytest.raises(ValueError, match="must match"):
        BrierLM().update(y, y[:1], y)
    with pytest.raises(ValueError, match="positive int"):
        BrierLM(max_n=0)
    short = BrierLM()
    short.update(y[:, :2], y[:, :2], y[:, :2])  # no 3- or 4-grams: BrierLM is undefined
    assert math.isnan(short.compute().item())


def test_many_queries_use_smaller_chunks_with_the_same_result() -> None:
    from lightning_contloss.functional.vmf_distribution import _PAIR_BUDGET, _chunk_for

    assert _chunk_for(4096, 100) == 4096 and _chunk_for(4096, 8192) == _PAIR_BUDGET // 8192
    assert _chunk_for(4096, 10**9) == 1
    g = torch.Generator().manual_seed(0)
    table = torch.randn(3000, 8, generator=g, dtype=torch.float64)
    pred = torch.randn(5000, 8, generator=g, dtype=torch.float64)
    big = vmf_log_partition(pred, table, kappa=5.0, chunk_size=4096)  # capped to 419 rows per chunk
    small = torch.cat([vmf_log_partition(p, table, kappa=5.0, chunk_size=4096) for p in pred.split(100)])
    assert torch.allclose(big, small, atol=1e-5)


# ---------------------------------------------------------------- non-finite predictions (issue 11, row 16)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_fit_kappa_and_vmf_sample_reject_non_finite_input(bad: float) -> None:
    pred, target, table = problem()
    broken = pred.clone()
    broken[1, 0] = bad
    with pytest.raises(ValueError, match="pred must be finite"):
        fit_kappa(broken, target, table)  # was κ = 9.5e-7
    with pytest.raises(ValueError, match="pred must be finite"):
        vmf_sample(broken, table)  # was id 0
    bad_table = table.clone()
    bad_table[3, 2] = bad
    with pytest.raises(ValueError, match="table must be finite"):
        fit_kappa(pred, target, bad_table)
    with pytest.raises(ValueError, match="table must be finite"):
        vmf_sample(pred, bad_table)
    # An ignored position may hold anything: fit_kappa never reads it.
    broken_target = target.clone()
    broken_target[1] = -1
    assert math.isfinite(fit_kappa(broken, broken_target, table, ignore_index=-1))


# ---------------------------------------------------------------- PredictionSpread's functional twin (issue 10)
def test_prediction_spread_function_is_the_metric_on_one_batch() -> None:
    from collections import Counter

    from lightning_contloss.metrics import PredictionSpread, prediction_spread

    g = torch.Generator().manual_seed(0)
    pred_ids, target = torch.randint(0, 9, (4, 25), generator=g), torch.randint(0, 9, (4, 25), generator=g)
    target[:, :5] = -1
    metric = PredictionSpread(9, ignore_index=-1)
    metric.update(pred_ids, target)
    got = prediction_spread(pred_ids, 9, target, ignore_index=-1)
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in metric.compute().items()}
    kept = Counter(pred_ids[target != -1].tolist())
    assert got["distinct_pred"].item() == len(kept)
    assert got["top_pred_share"].item() == pytest.approx(max(kept.values()) / sum(kept.values()))
    empty = prediction_spread(pred_ids[:0], 9)
    assert empty["distinct_pred"].item() == 0 and empty["top_pred_share"].item() == 0.0
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        prediction_spread(pred_ids, 0)
