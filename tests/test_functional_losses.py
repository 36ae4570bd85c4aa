"""Tests of the functional continuous losses against independent numpy/scipy implementations."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.special as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightning_contloss.functional as CF
from lightning_contloss.functional._checks import compute_dtype

IGNORE = -100


# ----------------------------------------------------------------------------- references
def _np_unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _np_log_cm(kappa: np.ndarray, m: int) -> np.ndarray:
    """log C_m(κ) through scipy's exponentially scaled Bessel function: log I_v = log ive + κ."""
    v = m / 2 - 1
    return v * np.log(kappa) - (np.log(sp.ive(v, kappa)) + kappa) - (m / 2) * np.log(2 * np.pi)


def _np_reduce(per: np.ndarray, keep: np.ndarray, reduction: str) -> np.ndarray:
    per = np.where(keep, per, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return np.asarray(per.sum())
    return np.asarray(per.sum() / max(int(keep.sum()), 1))


def _data(
    n: int = 12, d: int = 6, v: int = 20, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, d, generator=g, dtype=dtype) * 3
    ids = torch.randint(v, (n,), generator=g)
    table = torch.nn.functional.normalize(torch.randn(v, d, generator=g, dtype=dtype), dim=-1)
    return pred, ids, table


def _with_padding(ids: torch.Tensor) -> torch.Tensor:
    ids = ids.clone()
    ids[::4] = IGNORE
    return ids


# ----------------------------------------------------------------------------- reference values
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cosine_matches_numpy(reduction: str) -> None:
    pred, ids, table = _data()
    ids = _with_padding(ids)
    p, t, i = pred.numpy(), table.numpy(), ids.numpy()
    keep = i != IGNORE
    per = 1 - (_np_unit(p) * _np_unit(t[np.where(keep, i, 0)])).sum(-1)
    got = CF.cosine_loss(pred, ids, table, ignore_index=IGNORE, reduction=reduction)
    np.testing.assert_allclose(got.numpy(), _np_reduce(per, keep, reduction), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_l2_matches_numpy_and_sums_over_dim(reduction: str) -> None:
    pred, ids, table = _data()
    table = table * 2.5  # raw rows are used, not re-normalised
    ids = _with_padding(ids)
    p, t, i = pred.numpy(), table.numpy(), ids.numpy()
    keep = i != IGNORE
    per = ((p - t[np.where(keep, i, 0)]) ** 2).sum(-1)
    got = CF.l2_loss(pred, ids, table, ignore_index=IGNORE, reduction=reduction)
    np.testing.assert_allclose(got.numpy(), _np_reduce(per, keep, reduction), rtol=1e-12)


@pytest.mark.parametrize(("lambda1", "lambda2"), [(0.02, 0.1), (0.0, 1.0), (0.5, 0.7)])
def test_vmf_nll_matches_scipy(lambda1: float, lambda2: float) -> None:
    pred, ids, table = _data(n=16, d=300, v=50)
    pred = pred * torch.linspace(0.05, 40.0, 16, dtype=torch.float64)[:, None]  # κ from ~1 to ~2000
    table = table * 3.0  # the loss must use the unit direction of the row
    p, t, i = pred.numpy(), table.numpy(), ids.numpy()
    kappa = np.linalg.norm(p, axis=-1)
    mu = _np_unit(t[i])
    ref = -_np_log_cm(kappa, 300) - lambda2 * (p * mu).sum(-1) + lambda1 * kappa
    got = CF.vmf_nll(pred, ids, table, lambda1=lambda1, lambda2=lambda2, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


def test_vmf_nll_gradient_matches_scipy_bessel_ratio() -> None:
    pred, ids, table = _data(n=8, d=64, v=10)
    pred = (pred * 5).requires_grad_()
    CF.vmf_nll(pred, ids, table, reduction="sum").backward()
    p, mu = pred.detach().numpy(), table[ids].numpy()
    kappa = np.linalg.norm(p, axis=-1, keepdims=True)
    ratio = sp.ive(32, kappa) / sp.ive(31, kappa)  # d/dκ −log C_m = I_{m/2}/I_{m/2−1}
    ref = (ratio + 0.02) * p / kappa - 0.1 * mu
    np.testing.assert_allclose(pred.grad.numpy(), ref, rtol=1e-8)


def test_vmf_approx_is_kumar_tsvetkov_formula() -> None:
    pred, ids, table = _data(n=10, d=300, v=30)
    p, mu = pred.numpy() * 10, table[ids].numpy()
    kappa = np.linalg.norm(p, axis=-1)
    v = 300 / 2 - 1
    s = np.sqrt((v + 1) ** 2 + kappa**2)
    logcmkappox = s - (v - 1) * np.log(v - 1 + s)  # their code adds this where −log C_m goes
    ref = logcmkappox - 0.1 * (p * mu).sum(-1) + 0.02 * kappa
    got = CF.vmf_nll(pred * 10, ids, table, approx=True, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def _np_max_margin(
    p: np.ndarray, i: np.ndarray, t: np.ndarray, cand: np.ndarray, margin: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Brute force: every token scores every candidate id, argmax of cos(ê,e_j) − cos(e_w,e_j)."""
    u, tn = _np_unit(p), _np_unit(t)
    out = np.zeros(len(i))
    for k in range(len(i)):
        best, arg = -np.inf, -1
        for j in cand:
            if j == i[k] or (allowed is not None and not allowed[j]):
                continue
            s = u[k] @ tn[j] - tn[i[k]] @ tn[j]
            if s > best:
                best, arg = s, j
        if arg >= 0:
            out[k] = max(0.0, margin + u[k] @ tn[arg] - u[k] @ tn[i[k]])
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_max_margin_informative_matches_brute_force(chunk_size: int) -> None:
    pred, ids, table = _data(n=10, d=5, v=23)
    ref = _np_max_margin(pred.numpy(), ids.numpy(), table.numpy(), np.arange(23), 0.5)
    got = CF.max_margin_loss(pred, ids, table, chunk_size=chunk_size, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert (ref > 0).sum() >= 3  # the hinge is active for some tokens, so the test can fail


def test_max_margin_exclude_skips_the_best_negative() -> None:
    pred, ids, table = _data(n=6, d=4, v=9)
    allowed = np.ones(9, dtype=bool)
    allowed[[1, 4]] = False
    exclude = torch.from_numpy(~allowed)
    ref = _np_max_margin(pred.numpy(), ids.numpy(), table.numpy(), np.arange(9), 1.0, allowed)
    got = CF.max_margin_loss(pred, ids, table, margin=1.0, exclude=exclude, chunk_size=4, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    plain = CF.max_margin_loss(pred, ids, table, margin=1.0, reduction="none")
    assert not torch.allclose(plain, got)


def test_max_margin_sampled_matches_brute_force_over_the_draw() -> None:
    pred, ids, table = _data(n=10, d=5, v=40)
    drawn = torch.randint(40, (8,), generator=torch.Generator().manual_seed(3))
    ref = _np_max_margin(pred.numpy(), ids.numpy(), table.numpy(), drawn.numpy(), 0.5)
    got = CF.max_margin_loss(
        pred,
        ids,
        table,
        negatives="sampled",
        num_negatives=8,
        generator=torch.Generator().manual_seed(3),
        reduction="none",
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_max_margin_in_batch_uses_other_counted_targets() -> None:
    pred, ids, table = _data(n=12, d=5, v=30)
    ids = _with_padding(ids)
    i = ids.numpy()
    keep = i != IGNORE
    counted = np.unique(i[keep])
    ref = _np_max_margin(pred.numpy(), np.where(keep, i, 0), table.numpy(), counted, 0.5)
    got = CF.max_margin_loss(pred, ids, table, negatives="in_batch", ignore_index=IGNORE, reduction="none")
    np.testing.assert_allclose(got.numpy(), np.where(keep, ref, 0.0), rtol=1e-12)


def test_max_margin_token_without_candidates_contributes_zero() -> None:
    table = torch.eye(3, dtype=torch.float64)
    pred = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    loss = CF.max_margin_loss(pred, torch.tensor([0, 0]), table, negatives="in_batch", reduction="none")
    assert loss.tolist() == [0.0, 0.0]


def _np_info_nce(p: np.ndarray, i: np.ndarray, t: np.ndarray, neg: np.ndarray, tau: float) -> np.ndarray:
    u, tn = _np_unit(p), _np_unit(t)
    out = []
    for k in range(len(i)):
        negs = [u[k] @ tn[j] for j in neg if j != i[k]]
        logits = np.array([u[k] @ tn[i[k]], *negs]) / tau
        out.append(sp.logsumexp(logits) - logits[0])
    return np.array(out)


def test_info_nce_matches_scipy_and_masks_accidental_hits() -> None:
    pred, ids, table = _data(n=10, d=5, v=6)  # V=6 with K=16 guarantees accidental hits
    drawn = torch.randint(6, (16,), generator=torch.Generator().manual_seed(1))
    assert bool((drawn[None, :] == ids[:, None]).any())
    ref = _np_info_nce(pred.numpy(), ids.numpy(), table.numpy(), drawn.numpy(), 0.1)
    got = CF.info_nce_loss(
        pred,
        ids,
        table,
        temperature=0.1,
        num_negatives=16,
        generator=torch.Generator().manual_seed(1),
        reduction="none",
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_info_nce_exclude_masks_special_ids() -> None:
    pred, ids, table = _data(n=8, d=5, v=10)
    exclude = torch.zeros(10, dtype=torch.bool)
    exclude[:5] = True
    g = torch.Generator().manual_seed(2)
    drawn = torch.randint(10, (20,), generator=torch.Generator().manual_seed(2)).numpy()
    ref = _np_info_nce(pred.numpy(), ids.numpy(), table.numpy(), drawn[drawn >= 5], 0.5)
    got = CF.info_nce_loss(
        pred, ids, table, temperature=0.5, num_negatives=20, generator=g, exclude=exclude, reduction="none"
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_unigram_sampler_follows_smoothed_counts() -> None:
    from lightning_contloss.functional._negatives import sample_negatives

    counts = torch.tensor([0.0, 1.0, 10.0, 100.0, 1000.0])
    g = torch.Generator().manual_seed(0)
    drawn = sample_negatives(5, 200_000, "unigram", counts, 0.75, g, torch.device("cpu"))
    freq = np.bincount(drawn.numpy(), minlength=5) / 200_000
    expected = counts.numpy() ** 0.75 / (counts.numpy() ** 0.75).sum()
    assert freq[0] == 0.0
    np.testing.assert_allclose(freq, expected, atol=4e-3)


def test_rewe_matches_scipy() -> None:
    pred, ids, table = _data(n=9, d=4, v=7)
    ids = _with_padding(ids)
    logits = torch.randn(9, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    i = ids.numpy()
    keep = i != IGNORE
    safe = np.where(keep, i, 0)
    nll = -sp.log_softmax(logits.numpy(), axis=-1)[np.arange(9), safe]
    cos = (_np_unit(pred.numpy()) * _np_unit(table.numpy()[safe])).sum(-1)
    per = nll + 3.0 * (1 - cos)
    got = CF.rewe_loss(logits, pred, ids, table, lam=3.0, ignore_index=IGNORE)
    np.testing.assert_allclose(got.numpy(), _np_reduce(per, keep, "mean"), rtol=1e-12)


# ----------------------------------------------------------------------------- gradcheck (float64)
def _seeded(fn: Callable[..., torch.Tensor], **kw: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """A closure that draws the same negatives on every call (gradcheck calls it many times)."""

    def call(pred: torch.Tensor) -> torch.Tensor:
        return fn(pred, **kw, generator=torch.Generator().manual_seed(0))

    return call


def _gradcheck_cases() -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    _, ids, table = _data(n=6, d=5, v=9)
    pad = _with_padding(ids)
    return [
        ("cosine", lambda p: CF.cosine_loss(p, pad, table, ignore_index=IGNORE)),
        ("l2", lambda p: CF.l2_loss(p, pad, table, ignore_index=IGNORE, reduction="sum")),
        ("vmf", lambda p: CF.vmf_nll(p, pad, table, ignore_index=IGNORE, reduction="none")),
        ("vmf_plain", lambda p: CF.vmf_nll(p, ids, table, lambda1=0.0, lambda2=1.0)),
        ("vmf_approx", lambda p: CF.vmf_nll(p, ids, table, approx=True)),
        ("mm_informative", lambda p: CF.max_margin_loss(p, ids, table, margin=3.0, chunk_size=4)),
        (
            "mm_sampled",
            _seeded(
                lambda p, generator: CF.max_margin_loss(
                    p, ids, table, margin=3.0, negatives="sampled", num_negatives=5, generator=generator
                )
            ),
        ),
        ("mm_in_batch", lambda p: CF.max_margin_loss(p, ids, table, margin=3.0, negatives="in_batch")),
        (
            "info_nce",
            _seeded(
                lambda p, generator: CF.info_nce_loss(
                    p, ids, table, temperature=0.3, num_negatives=7, generator=generator, reduction="none"
                )
            ),
        ),
        (
            "info_nce_unigram",
            _seeded(
                lambda p, generator: CF.info_nce_loss(
                    p,
                    ids,
                    table,
                    num_negatives=7,
                    sampler="unigram",
                    counts=torch.arange(1.0, 10.0),
                    generator=generator,
                )
            ),
        ),
    ]


@pytest.mark.parametrize(("name", "fn"), _gradcheck_cases(), ids=[c[0] for c in _gradcheck_cases()])
def test_gradcheck(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    pred = _data(n=6, d=5, v=9)[0].requires_grad_()
    assert torch.autograd.gradcheck(fn, (pred,), eps=1e-6, atol=1e-6)


def test_gradcheck_rewe_logits_and_pred() -> None:
    pred, ids, table = _data(n=5, d=4, v=6)
    logits = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda lg, p: CF.rewe_loss(lg, p, ids, table, lam=2.0), (logits, pred))


# ----------------------------------------------------------------------------- properties
_finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
_vectors = st.lists(_finite, min_size=4, max_size=4).filter(lambda v: sum(x * x for x in v) > 1e-4)


@settings(max_examples=40, deadline=None)
@given(vec=_vectors, scale=st.floats(1e-3, 1e3), target=st.integers(0, 5))
def test_cosine_is_scale_invariant(vec: list[float], scale: float, target: int) -> None:
    table = _data(d=4, v=6)[2]
    pred = torch.tensor([vec], dtype=torch.float64)
    ids = torch.tensor([target])
    a = CF.cosine_loss(pred, ids, table)
    b = CF.cosine_loss(pred * scale, ids, table)
    assert math.isclose(a.item(), b.item(), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    kappa=st.floats(0.01, 1e4),
    angles=st.tuples(st.floats(0.0, math.pi), st.floats(0.0, math.pi)).filter(
        lambda a: abs(math.cos(a[0]) - math.cos(a[1])) > 1e-3
    ),
    lambda2=st.floats(0.05, 1.0),
)
def test_vmf_decreases_as_pred_turns_towards_target(kappa: float, angles: tuple[float, float], lambda2: float) -> None:
    table = torch.eye(8, dtype=torch.float64)
    near, far = sorted(angles)

    def at(angle: float) -> torch.Tensor:
        pred = torch.zeros(1, 8, dtype=torch.float64)
        pred[0, 0], pred[0, 1] = kappa * math.cos(angle), kappa * math.sin(angle)
        return CF.vmf_nll(pred, torch.tensor([0]), table, lambda2=lambda2)

    assert at(near).item() < at(far).item()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_distance_losses_are_non_negative(seed: int, scale: float) -> None:
    pred, ids, table = _data(n=8, d=5, v=12, seed=seed)
    pred = pred * scale
    g = torch.Generator().manual_seed(seed)
    for loss in (
        CF.cosine_loss(pred, ids, table, reduction="none"),
        CF.l2_loss(pred, ids, table, reduction="none"),
        CF.max_margin_loss(pred, ids, table, reduction="none"),
        CF.max_margin_loss(pred, ids, table, negatives="sampled", num_negatives=4, generator=g, reduction="none"),
        CF.max_margin_loss(pred, ids, table, negatives="in_batch", reduction="none"),
        CF.info_nce_loss(pred, ids, table, num_negatives=6, generator=g, reduction="none"),
    ):
        assert bool((loss >= -1e-12).all())


# ----------------------------------------------------------------------------- bad input and numerics
def _all_losses(table: torch.Tensor) -> dict[str, Callable[..., torch.Tensor]]:
    logits = torch.zeros(table.shape[0])
    return {
        "cosine": lambda p, i, **k: CF.cosine_loss(p, i, table, **k),
        "l2": lambda p, i, **k: CF.l2_loss(p, i, table, **k),
        "vmf": lambda p, i, **k: CF.vmf_nll(p, i, table, **k),
        "vmf_approx": lambda p, i, **k: CF.vmf_nll(p, i, table, approx=True, **k),
        "mm_informative": lambda p, i, **k: CF.max_margin_loss(p, i, table, **k),
        "mm_sampled": lambda p, i, **k: CF.max_margin_loss(p, i, table, negatives="sampled", num_negatives=4, **k),
        "mm_in_batch": lambda p, i, **k: CF.max_margin_loss(p, i, table, negatives="in_batch", **k),
        "info_nce": lambda p, i, **k: CF.info_nce_loss(p, i, table, num_negatives=4, **k),
        "rewe": lambda p, i, **k: CF.rewe_loss(logits.to(p.device).expand(*p.shape[:-1], -1).clone(), p, i, table, **k),
    }


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
def test_all_padding_gives_zero_loss_and_zero_grad(name: str) -> None:
    table = _data(d=4, v=10)[2].float()
    pred = torch.randn(2, 3, 4, requires_grad=True)
    ids = torch.full((2, 3), IGNORE)
    for reduction in ("mean", "sum"):
        pred.grad = None
        loss = _all_losses(table)[name](pred, ids, ignore_index=IGNORE, reduction=reduction)
        loss.backward()
        assert loss.item() == 0.0
        assert pred.grad is not None and bool((pred.grad == 0).all())


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
def test_padding_gets_exactly_zero_gradient(name: str) -> None:
    table = _data(d=4, v=10)[2].float()
    pred = torch.randn(6, 4)
    pred[0] = 0.0  # a zero prediction at a padded position must not leak NaN either
    pred.requires_grad_()
    ids = torch.tensor([IGNORE, 1, 2, IGNORE, 3, 4])
    loss = _all_losses(table)[name](pred, ids, ignore_index=IGNORE, reduction="none")
    assert loss[0].item() == 0.0 and loss[3].item() == 0.0
    loss.sum().backward()
    assert bool((pred.grad[[0, 3]] == 0).all())
    assert bool(torch.isfinite(pred.grad).all())


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_norm_prediction_is_finite(name: str, dtype: torch.dtype) -> None:
    table = _data(d=4, v=10, dtype=dtype)[2]
    pred = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    loss = _all_losses(table)[name](pred, torch.tensor([1, 2, 3]))
    loss.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(pred.grad).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("approx", [False, True])
def test_vmf_extreme_kappa_is_finite(dtype: torch.dtype, approx: bool) -> None:
    table = torch.eye(300, dtype=dtype)
    kappas = torch.tensor([1e-30, 1e-8, 1e-6, 1e-3, 1.0, 1e3, 5e4, 1e5], dtype=dtype)
    pred = torch.zeros(len(kappas), 300, dtype=dtype)
    pred[:, 0] = kappas
    pred[:, 1] = kappas  # κ = √2·value, direction at 45° from the target
    pred.requires_grad_()
    loss = CF.vmf_nll(pred, torch.zeros(len(kappas), dtype=torch.long), table, approx=approx, reduction="none")
    loss.sum().backward()
    assert bool(torch.isfinite(loss).all()) and bool(torch.isfinite(pred.grad).all())


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
def test_ids_out_of_range_name_the_valid_range(name: str) -> None:
    fn = _all_losses(torch.eye(3))[name]
    for bad in (3, -1):
        with pytest.raises(ValueError, match=r"valid ids are 0\.\.2"):
            fn(torch.randn(2, 3), torch.tensor([0, bad]))
    # ignore_index is exempt from the range check even though it is negative
    assert torch.isfinite(fn(torch.randn(2, 3), torch.tensor([0, IGNORE]), ignore_index=IGNORE))


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
def test_dim_mismatch_names_both_dims(name: str) -> None:
    table = torch.randn(10, 256)
    fn = _all_losses(table)[name]
    msg = "pred has dim 300 but the target table has dim 256; build the head with out_features=targets.dim"
    with pytest.raises(ValueError, match=msg):
        fn(torch.randn(4, 300), torch.tensor([1, 2, 3, 4]))


@pytest.mark.parametrize("name", list(_all_losses(torch.eye(3))))
def test_bf16_pred_with_fp32_table_computes_in_fp32(name: str) -> None:
    table = _data(d=8, v=10, dtype=torch.float32)[2]
    pred = (torch.randn(6, 8) * 2).to(torch.bfloat16).requires_grad_()
    ids = torch.tensor([0, 1, 2, 3, 4, 5])
    fn = _all_losses(table)[name]
    loss = (
        fn(pred, ids, generator=torch.Generator().manual_seed(0))
        if "nce" in name or "sampled" in name
        else fn(pred, ids)
    )
    assert loss.dtype == torch.float32
    loss.backward()
    assert pred.grad is not None and pred.grad.dtype == torch.bfloat16
    ref_kw = {"generator": torch.Generator().manual_seed(0)} if "nce" in name or "sampled" in name else {}
    ref = fn(pred.detach().float(), ids, **ref_kw)
    assert torch.allclose(loss, ref, rtol=1e-6)


def test_autocast_does_not_lower_the_loss_maths() -> None:
    pred, ids, table = _data(n=64, d=32, v=500, dtype=torch.float32)
    ref = CF.max_margin_loss(pred, ids, table)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = CF.max_margin_loss(pred, ids, table)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-6)


def test_compute_dtype() -> None:
    assert compute_dtype(torch.zeros(1, dtype=torch.float16), torch.zeros(1, dtype=torch.bfloat16)) == torch.float32
    assert compute_dtype(torch.zeros(1, dtype=torch.float64), torch.zeros(1)) == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"margin": -1.0}, "margin must be >= 0"),
        ({"negatives": "hard"}, "negatives must be one of"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"negatives": "sampled", "num_negatives": 0}, "num_negatives must be a positive int"),
        ({"exclude": torch.zeros(3, dtype=torch.bool)}, r"exclude must be a \[V\] bool mask"),
    ],
)
def test_max_margin_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    pred, ids, table = _data()
    with pytest.raises(ValueError, match=match):
        CF.max_margin_loss(pred, ids, table, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"sampler": "zipf"}, "sampler must be one of"),
        ({"sampler": "unigram"}, "needs counts"),
        ({"sampler": "unigram", "counts": torch.ones(3)}, "counts has shape"),
        ({"sampler": "unigram", "counts": torch.zeros(20)}, "not all zero"),
        ({"sampler": "unigram", "counts": torch.ones(20), "power": -1.0}, "power must be >= 0"),
    ],
)
def test_info_nce_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    pred, ids, table = _data()
    with pytest.raises(ValueError, match=match):
        CF.info_nce_loss(pred, ids, table, **kwargs)  # type: ignore[arg-type]


def test_other_bad_inputs() -> None:
    pred, ids, table = _data()
    with pytest.raises(ValueError, match="lambda2 must be in"):
        CF.vmf_nll(pred, ids, table, lambda2=0.0)
    with pytest.raises(ValueError, match="lambda1 must be >= 0"):
        CF.vmf_nll(pred, ids, table, lambda1=-0.1)
    with pytest.raises(ValueError, match="ids has shape"):
        CF.cosine_loss(pred, ids[:-1], table)
    with pytest.raises(ValueError, match="ids must be an integer tensor"):
        CF.cosine_loss(pred, ids.double(), table)
    with pytest.raises(ValueError, match="pred must be a floating-point"):
        CF.cosine_loss(pred.long(), ids, table)
    with pytest.raises(ValueError, match=r"table must be a non-empty \[V, D\]"):
        CF.cosine_loss(pred, ids, table[0])
    with pytest.raises(ValueError, match=r"pass targets\.weight"):
        CF.cosine_loss(pred, ids, table.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="move them to one device"):
        CF.cosine_loss(pred.to("meta"), ids, table)
    with pytest.raises(ValueError, match=r"logits must be \[\.\.\., V\]"):
        CF.rewe_loss(torch.zeros(len(ids), 3), pred, ids, table)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        CF.rewe_loss(torch.zeros(len(ids), 20), pred, ids, table, lam=-1.0)


def test_leading_dimensions_are_kept_for_reduction_none() -> None:
    pred, ids, table = _data(n=12)
    out = CF.vmf_nll(pred.reshape(3, 4, -1), ids.reshape(3, 4), table, reduction="none")
    assert out.shape == (3, 4)
    flat = CF.vmf_nll(pred, ids, table, reduction="none")
    assert torch.equal(out.flatten(), flat)


def test_row_dot_norm_backward_matches_autograd() -> None:
    from lightning_contloss.functional.cosine import row_dot_norm

    a = torch.randn(7, 5, dtype=torch.float64)
    a[2] = 0.0  # the norm's subgradient at zero is 0, as in torch.linalg.vector_norm
    b = torch.randn(7, 5, dtype=torch.float64)
    a.requires_grad_()
    b.requires_grad_()
    wd, wn = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    dot, norm = row_dot_norm(a, b)
    got = torch.autograd.grad((dot * wd + norm * wn).sum(), (a, b))
    ref_loss = ((a * b).sum(-1) * wd + torch.linalg.vector_norm(a, dim=-1) * wn).sum()
    ref = torch.autograd.grad(ref_loss, (a, b))
    assert all(torch.allclose(g, r) for g, r in zip(got, ref))
    keep = torch.ones(7, dtype=torch.bool)
    keep[2] = False  # gradcheck's finite differences are not defined at the kink
    assert torch.autograd.gradcheck(lambda x, y: row_dot_norm(x[keep], y[keep]), (a, b))


# ----------------------------------------------------------------------------- non-finite input (issue 11, row 1)
@pytest.mark.parametrize("negatives", ["informative", "sampled", "in_batch"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_max_margin_propagates_nan_and_inf_predictions(negatives: str, bad: float) -> None:
    from lightning_contloss.losses import MaxMarginLoss

    pred, ids, table = _data(n=8, d=5, v=12)
    clean = CF.max_margin_loss(
        pred, ids, table, margin=1.0, negatives=negatives, generator=torch.Generator().manual_seed(0), reduction="none"
    )
    pred[2, 1] = bad
    kw = {"margin": 1.0, "negatives": negatives, "num_negatives": 1024, "chunk_size": 5}
    got = CF.max_margin_loss(pred, ids, table, **kw, generator=torch.Generator().manual_seed(0), reduction="none")
    assert bool(got[2].isnan())  # was 0.0: the broken token looked perfect
    keep = torch.arange(8) != 2
    assert torch.allclose(got[keep], clean[keep], rtol=1e-12, atol=0)  # the other tokens are untouched
    assert bool(CF.max_margin_loss(pred, ids, table, **kw).isnan())  # and the mean says so
    metric = MaxMarginLoss(table, **kw)
    assert bool(metric(pred, ids).isnan()) and bool(metric.compute().isnan())


def test_max_margin_propagates_a_nan_table_row() -> None:
    pred, ids, table = _data(n=6, d=5, v=12)
    table[7, 0] = math.nan  # not any token's target, but every token's candidate
    ids[ids == 7] = 0
    assert bool(CF.max_margin_loss(pred, ids, table, reduction="none").isnan().all())


def test_max_margin_ignored_nan_positions_and_no_candidate_tokens_stay_zero() -> None:
    pred, ids, table = _data(n=6, d=5, v=12)
    pred[0] = math.nan
    ids[0] = IGNORE
    got = CF.max_margin_loss(pred, ids, table, ignore_index=IGNORE, reduction="none")
    assert got[0].item() == 0.0 and bool(torch.isfinite(got).all())
    one = torch.eye(3, dtype=torch.float64)  # every in-batch candidate is the token's own id
    assert CF.max_margin_loss(one[:2], torch.tensor([0, 0]), one, negatives="in_batch").item() == 0.0
