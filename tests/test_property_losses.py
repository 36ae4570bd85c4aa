"""Generated bad input for every functional loss, loss class, metric and vMF function (issue 11).

Each case corrupts at most one argument: a tensor (NaN/Inf, wrong dim, dtype, shape or type,
empty, ids out of range) or a hyper-parameter (negative, NaN, inf, bool, str, None, a list).
The call must then do what the argument's corruption documents:

* raise the package's own ``ValueError``/``TypeError`` (raised in ``lightning_contloss``, not in
  torch or Python) whose message names the corrupted argument;
* or return a finite result (valid input, empty input, bf16 input);
* or return a non-finite result where a NaN/Inf prediction must propagate (the losses);
* or return NaN where the documentation says so (a metric with no token to count).

A loss class that raises on a batch keeps its epoch state. The loss classes come from the
registry (:func:`~lightning_contloss.losses.loss_names`), so a new registered loss is covered
without a change here. Hypothesis runs derandomised; run with ``-s`` to see how many cases ran.
"""

from __future__ import annotations

import inspect
import math
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import lightning_contloss.functional as CF
from lightning_contloss.losses import ReWELoss, loss_names, make_loss
from lightning_contloss.metrics import (
    BrierLM,
    NeighborAccuracy,
    PredictionSpread,
    VMFPerplexity,
    brier_lm,
    neighbor_accuracy,
    prediction_spread,
    vmf_perplexity,
)
from lightning_contloss.targets import TargetEmbeddings

V, D, IGNORE = 7, 4, -100
CASES = {"run": 0}
PROPERTY = settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_count_cases() -> Iterator[None]:
    # The inputs are tiny: a thread pool's synchronisation would cost more than the maths,
    # and on a busy machine each parallel reduction can wait milliseconds for its threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    print(f"\ntest_property_losses: {CASES['run']} generated cases")


# ---------------------------------------------------------------------------- expectations
@dataclass(frozen=True)
class Expect:
    """What a call must do: ``raise`` (naming ``name``), or return ``finite``/``nonfinite``/``nan_ok`` values."""

    what: str
    name: str = ""


FINITE, NONFINITE, NAN_OK = Expect("finite"), Expect("nonfinite"), Expect("nan_ok")


def raises(name: str) -> Expect:
    return Expect("raise", name)


def _values(out: Any) -> Tensor:
    if isinstance(out, dict):
        return torch.cat([_values(v) for v in out.values()])
    if isinstance(out, (tuple, list)):
        return torch.cat([_values(v) for v in out])
    return torch.as_tensor(out).detach().double().reshape(-1)


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", message) is not None


def check(call: Callable[[], Any], expect: Expect) -> Any:
    """Run ``call`` and assert it met ``expect``; returns its result (None when it raised)."""
    CASES["run"] += 1
    try:
        out = call()
    except (ValueError, TypeError) as err:
        if expect.what != "raise":
            raise AssertionError(f"expected a {expect.what} result, got {err!r}") from err
        assert _names(str(err), expect.name), f"the error does not name {expect.name!r}: {err}"
        where = traceback.extract_tb(err.__traceback__)[-1].filename
        assert "lightning_contloss" in where, f"{err!r} was raised in {where}, not by the package"
        return None
    assert expect.what != "raise", f"bad {expect.name} was accepted: returned {out!r}"
    values = _values(out)
    if expect.what == "finite":
        assert bool(torch.isfinite(values).all()), f"non-finite result {out!r}"
    elif expect.what == "nonfinite":
        assert not bool(torch.isfinite(values).all()), f"a NaN/Inf input did not propagate: {out!r}"
    else:
        assert bool((torch.isfinite(values) | torch.isnan(values)).all()), f"infinite result {out!r}"
    return out


# ---------------------------------------------------------------------------- hyper-parameters
BAD_REAL = (-1.0, math.nan, math.inf, -math.inf, True, "0.5", None, [0.5])
BAD_INT = (0, -2, 2.5, True, "3", None)


@dataclass(frozen=True)
class Param:
    """A hyper-parameter: valid values, bad ones, and the other arguments a bad value needs to be read."""

    valid: st.SearchStrategy[Any]
    bad: tuple[Any, ...]
    needs: dict[str, Any] = field(default_factory=dict)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(row: int) -> Tensor:
    mask = torch.zeros(V, dtype=torch.bool)
    mask[row] = True
    return mask


UNIGRAM = {"sampler": "unigram", "counts": torch.arange(1.0, V + 1)}
PARAMS: dict[str, Param] = {
    "reduction": Param(st.sampled_from(["mean", "sum", "none"]), ("avg", None, 1)),
    "ignore_index": Param(st.sampled_from([None, IGNORE]), (1.5, "x", True)),
    "margin": Param(st.floats(0, 5), BAD_REAL),
    "negatives": Param(st.sampled_from(["informative", "sampled", "in_batch"]), ("hard", None, 3)),
    "num_negatives": Param(st.integers(1, 12), BAD_INT, {"negatives": "sampled"}),
    "chunk_size": Param(st.integers(1, 9), BAD_INT),
    "generator": Param(st.integers(0, 9).map(_generator), ("seed", 3)),
    "exclude": Param(
        st.sampled_from([None, _mask(V - 1)]), (_mask(0).float(), torch.zeros(V + 1, dtype=torch.bool), "x")
    ),
    "lambda1": Param(st.floats(0, 1), BAD_REAL),
    "lambda2": Param(st.floats(0.01, 1), (0.0, 1.5, *BAD_REAL)),
    "approx": Param(st.booleans(), ("yes", 1, None)),
    "temperature": Param(st.floats(0.05, 5), (0.0, *BAD_REAL)),
    "sampler": Param(st.just("uniform"), ("zipf", None, 1)),
    "counts": Param(
        st.just(None),
        (torch.full((V,), math.nan), -torch.ones(V), torch.zeros(V), torch.ones(V, 2), "x"),
        {"sampler": "unigram"},
    ),
    "power": Param(st.floats(0, 2), BAD_REAL, UNIGRAM),
    "lam": Param(st.floats(0, 50), BAD_REAL),
    "regularizer": Param(st.just("default"), ("kumar2", None, 1)),
    "kumar_lambda": Param(st.floats(0, 0.99), (1.0, 1.5, *BAD_REAL)),
    "kappa_min": Param(st.floats(0, 10), BAD_REAL),
    "synthetic": Param(st.sampled_from(["projection", "difference"]), ("orth", None, 1)),
    "beta": Param(st.floats(0.1, 1.9), (0.0, 2.0, 2.5, *BAD_REAL)),
}
# A valid value for a hyper-parameter some bad value needs set ("sampled", "unigram").
NEEDED = {"sampler": st.sampled_from(["uniform", "unigram"]), "counts": st.just(UNIGRAM["counts"])}


def draw_params(data: st.DataObject, names: list[str], corrupt: str | None) -> dict[str, Any]:
    """Valid values for ``names``, except ``corrupt``, which gets a bad value (and what it needs)."""
    kwargs = {name: data.draw(PARAMS[name].valid, label=name) for name in names}
    if kwargs.get("sampler") == "unigram" or (data.draw(st.booleans(), label="unigram") and "counts" in names):
        kwargs.update(UNIGRAM)
    if corrupt is not None:
        kwargs.update({key: value for key, value in PARAMS[corrupt].needs.items() if key in names})
        kwargs[corrupt] = data.draw(st.sampled_from(PARAMS[corrupt].bad), label=f"bad {corrupt}")
    return kwargs


# ---------------------------------------------------------------------------- tensors
PRED_KINDS = {
    "nan": NONFINITE,
    "inf": NONFINITE,
    "-inf": NONFINITE,
    "empty": FINITE,
    "bf16": FINITE,
    "f64": FINITE,
    "dim": raises("pred"),
    "int": raises("pred"),
    "scalar": raises("pred"),
    "list": raises("pred"),
}
IDS_KINDS = ("high", "negative", "float", "bool", "shape", "list")
TABLE_KINDS = ("1d", "empty", "int", "list", "dim")


@dataclass
class Batch:
    pred: Any
    ids: Any
    table: Any


def draw_batch(data: st.DataObject, ignore_index: int | None) -> Batch:
    seed = data.draw(st.integers(0, 2**16), label="seed")
    lead = data.draw(st.sampled_from([(5,), (2, 3), (1,), (3, 1)]), label="lead")
    scale = data.draw(st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e3]), label="scale")
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(*lead, D, generator=g) * scale
    ids = torch.randint(V - 1, lead, generator=g)  # row V-1 may be excluded; no target uses it
    if ignore_index is not None and ids.numel() > 1:
        ids.view(-1)[0] = ignore_index
    return Batch(pred, ids, torch.randn(V, D, generator=g))


def corrupt_pred(b: Batch, kind: str) -> None:
    last = b.pred.shape[0] - 1
    if kind in ("nan", "inf", "-inf"):
        b.pred = b.pred.clone()
        b.pred.view(-1, D)[-1, 1] = float(kind)
        b.ids = b.ids.clone()
        b.ids.view(-1)[-1] = 2  # a counted position
    elif kind == "empty":
        b.pred, b.ids = b.pred[:0], b.ids[:0]
    elif kind == "bf16":
        b.pred = b.pred.bfloat16()
    elif kind == "f64":
        b.pred, b.table = b.pred.double(), b.table.double()
    elif kind == "dim":
        b.pred = torch.zeros(*b.pred.shape[:-1], D + 1)
    elif kind == "int":
        b.pred = b.pred.long()
    elif kind == "scalar":
        b.pred = torch.tensor(1.0)
    else:
        b.pred = b.pred.tolist()
    assert last >= -1


def corrupt_ids(b: Batch, kind: str) -> None:
    ids = b.ids.clone()
    if kind == "high":
        ids.view(-1)[-1] = V
    elif kind == "negative":
        ids.view(-1)[-1] = -3
    elif kind == "float":
        ids = ids.float()
    elif kind == "bool":
        ids = ids > 2
    elif kind == "shape":
        ids = ids.reshape(-1)[:-1]
    else:
        ids = ids.tolist()
    b.ids = ids


def corrupt_table(b: Batch, kind: str) -> Any:
    return {
        "1d": lambda: b.table[0],
        "empty": lambda: b.table[:0],
        "int": lambda: b.table.long(),
        "list": lambda: b.table.tolist(),
        "dim": lambda: torch.randn(V, D + 1),
    }[kind]()


def draw_corruption(data: st.DataObject, params: list[str], tensors: list[str]) -> tuple[str, str | None]:
    """``(argument, kind)``: a tensor kind, a bad hyper-parameter (kind ``None``), or ``("", None)``."""
    choices: list[tuple[str, str | None]] = [("", None), ("", None)]
    kinds = {"pred": list(PRED_KINDS), "ids": list(IDS_KINDS), "table": list(TABLE_KINDS)}
    kinds["logits"] = ["V", "int", "list", "nan"]
    choices += [(name, kind) for name in tensors for kind in kinds[name]]
    choices += [(name, None) for name in params]
    return data.draw(st.sampled_from(choices), label="corruption")


def apply_tensor_corruption(b: Batch, arg: str, kind: str | None) -> Expect:
    if arg == "pred" and kind is not None:
        corrupt_pred(b, kind)
        return PRED_KINDS[kind]
    if arg == "ids" and kind is not None:
        corrupt_ids(b, kind)
        return raises("ids")
    if arg == "table" and kind is not None:
        b.table = corrupt_table(b, kind)
        return raises("table")
    return FINITE


# ---------------------------------------------------------------------------- functional losses
FUNCTIONAL: dict[str, tuple[Callable[..., Tensor], list[str]]] = {
    "cosine_loss": (CF.cosine_loss, []),
    "l2_loss": (CF.l2_loss, []),
    "vmf_nll": (CF.vmf_nll, ["lambda1", "lambda2", "approx", "regularizer", "kappa_min"]),
    "vmf_nll_kumar": (partial(CF.vmf_nll, regularizer="kumar"), ["approx", "kumar_lambda", "kappa_min"]),
    "syn_margin_loss": (CF.syn_margin_loss, ["margin", "synthetic"]),
    "max_margin_loss": (
        CF.max_margin_loss,
        ["margin", "negatives", "num_negatives", "chunk_size", "generator", "exclude"],
    ),
    "info_nce_loss": (
        CF.info_nce_loss,
        ["temperature", "num_negatives", "sampler", "counts", "power", "generator", "exclude"],
    ),
    "rewe_loss": (CF.rewe_loss, ["lam"]),
    "energy_loss": (CF.energy_loss, ["beta"]),
}


def _logits(b: Batch, kind: str | None) -> tuple[Any, Expect]:
    lead = b.ids.shape if isinstance(b.ids, Tensor) else ()
    logits = torch.randn(*lead, V)
    if kind == "V":
        return torch.randn(*lead, V + 1), raises("logits")
    if kind == "int":
        return logits.long(), raises("logits")
    if kind == "list":
        return logits.tolist(), raises("logits")
    if kind == "nan":
        logits.view(-1, V)[0, 0] = math.nan
        if isinstance(b.ids, Tensor) and b.ids.numel():
            b.ids = b.ids.clone()
            b.ids.view(-1)[0] = 1  # counted, so the NaN reaches the loss
            return logits, NONFINITE
        return logits, FINITE
    return logits, FINITE


@PROPERTY
@given(data=st.data())
def test_functional_losses(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(list(FUNCTIONAL)), label="loss")
    fn, own = FUNCTIONAL[name]
    params = ["reduction", "ignore_index", *own]
    tensors = ["pred", "ids", "table"] + (["logits"] if name == "rewe_loss" else [])
    arg, kind = draw_corruption(data, params, tensors)
    kwargs = draw_params(data, params, arg if kind is None and arg else None)
    ignore = kwargs["ignore_index"] if isinstance(kwargs["ignore_index"], int) else None
    b = draw_batch(data, ignore if not isinstance(ignore, bool) else None)
    expect = raises(arg) if kind is None and arg else apply_tensor_corruption(b, arg, kind)
    if name == "rewe_loss":
        logits, logits_expect = _logits(b, kind if arg == "logits" else None)
        if arg == "logits":
            expect = logits_expect
        check(lambda: fn(logits, b.pred, b.ids, b.table, **kwargs), expect)
    else:
        check(lambda: fn(b.pred, b.ids, b.table, **kwargs), expect)


# ---------------------------------------------------------------------------- loss classes
CLASSES = {name: type(make_loss(name)) for name in loss_names()} | {"rewe": ReWELoss}


def _class_params(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p in PARAMS]


def _state(loss: Any) -> tuple[float, int]:
    return float(loss.loss_sum), int(loss.count)


@PROPERTY
@given(data=st.data())
def test_loss_classes(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(CLASSES)), label="class")
    cls = CLASSES[name]
    params = _class_params(cls)
    arg, kind = draw_corruption(data, params, ["pred", "ids", "table"])
    kwargs = draw_params(data, params, arg if kind is None and arg else None)
    if kind is None and arg:  # a bad hyper-parameter is refused by the constructor
        check(lambda: cls(**kwargs), raises(arg))
        return
    ignore = kwargs.get("ignore_index")
    b = draw_batch(data, ignore)
    shape = b.ids.shape
    loss = cls(TargetEmbeddings.from_tensor(b.table), **kwargs)

    def logits(i: Any) -> Tensor:  # ReWE's softmax scores, shaped like the (uncorrupted) ids
        return torch.randn(*(i.shape if isinstance(i, Tensor) else shape), V)

    if isinstance(loss, ReWELoss):
        call: Callable[..., Any] = lambda p, i: loss(logits(i), p, i)  # noqa: E731
        update: Callable[..., Any] = lambda p, i: loss.update(logits(i), p, i)  # noqa: E731
    else:
        call, update = loss, loss.update
    update(b.pred, b.ids)  # some epoch state to keep
    before = _state(loss)
    if arg == "table" and kind is not None:  # bind() refuses a bad table (a [V, D'] one is a table)
        bad_table = corrupt_table(b, kind)
        check(lambda: loss.bind(bad_table).count, raises("targets") if kind != "dim" else FINITE)
        return
    expect = apply_tensor_corruption(b, arg, kind)
    use_forward = data.draw(st.booleans(), label="forward")
    out = check(lambda: call(b.pred, b.ids) if use_forward else update(b.pred, b.ids) or loss.compute(), expect)
    if out is None:
        after = _state(loss)
        assert after == before or (math.isnan(after[0]) and math.isnan(before[0])), "a refused batch changed state"
        assert loss._enable_grad is False


def test_info_nce_counts_that_do_not_fit_the_table_are_refused_on_call() -> None:
    loss = make_loss("infonce", sampler="unigram", counts=torch.ones(V + 2)).bind(torch.randn(V, D))
    check(lambda: loss(torch.randn(3, D), torch.tensor([0, 1, 2])), raises("counts"))
    assert int(loss.count) == 0


# ---------------------------------------------------------------------------- metrics
def _ids(data: st.DataObject, shape: tuple[int, ...], high: int = V) -> Tensor:
    seed = data.draw(st.integers(0, 2**16), label="seed")
    return torch.randint(high, shape, generator=torch.Generator().manual_seed(seed))


def _bad_ids(x: Tensor, kind: str) -> Any:
    return {"float": lambda: x.float(), "bool": lambda: x > 1, "list": lambda: x.tolist()}[kind]()


def _neighbor_accuracy_case(data: st.DataObject) -> None:
    topk, target = _ids(data, (6, 3)), _ids(data, (6,))
    k = data.draw(st.integers(1, 3), label="k")
    ignore = data.draw(st.sampled_from([None, IGNORE]), label="ignore_index")
    bad = data.draw(
        st.sampled_from(
            [
                "",
                "k",
                "ignore_index",
                "topk_ids:float",
                "topk_ids:list",
                "topk_ids:shape",
                "target:float",
                "target:bool",
                "empty",
            ]
        ),
        label="bad",
    )
    expect = NAN_OK
    if bad == "k":
        k, expect = data.draw(st.sampled_from([*BAD_INT, 4]), label="bad k"), raises("k")
    elif bad == "ignore_index":
        ignore, expect = data.draw(st.sampled_from(PARAMS["ignore_index"].bad), label="bad"), raises("ignore_index")
    elif bad == "topk_ids:shape":
        topk, expect = topk[:4], raises("topk_ids")
    elif bad.startswith("topk_ids"):
        topk, expect = _bad_ids(topk, bad.split(":")[1]), raises("topk_ids")
    elif bad.startswith("target"):
        target, expect = _bad_ids(target, bad.split(":")[1]), raises("target")
    elif bad == "empty":
        topk, target = topk[:0], target[:0]
    if data.draw(st.booleans(), label="class"):

        def run() -> Tensor:
            metric = NeighborAccuracy(k=k, ignore_index=ignore)
            metric.update(topk, target)
            return metric.compute()

        check(run, expect)
    else:
        check(lambda: neighbor_accuracy(topk, target, k=k, ignore_index=ignore), expect)


def _vmf_perplexity_case(data: st.DataObject) -> None:
    ignore = data.draw(st.sampled_from([None, IGNORE]), label="ignore_index")
    b = draw_batch(data, ignore)
    kwargs: dict[str, Any] = {
        "kappa": data.draw(st.sampled_from([None, 0.0, 2.0]), label="kappa"),
        "chunk_size": data.draw(st.integers(1, 9), label="chunk_size"),
        "ignore_index": ignore,
    }
    exclude = data.draw(st.sampled_from([None, _mask(V - 1)]), label="exclude_mask")
    bad = data.draw(
        st.sampled_from(["", "pred", "target", "table", "kappa", "chunk_size", "exclude_mask", "ignore_index"])
    )
    expect = NAN_OK
    if bad == "pred":
        kind = data.draw(st.sampled_from(sorted(PRED_KINDS)), label="pred kind")
        corrupt_pred(b, kind)
        expect = {"finite": NAN_OK, "nonfinite": NONFINITE}.get(PRED_KINDS[kind].what, PRED_KINDS[kind])
    elif bad == "target":
        corrupt_ids(b, data.draw(st.sampled_from(IDS_KINDS), label="target kind"))
        expect = raises("target")
    elif bad == "table":
        b.table, expect = corrupt_table(b, data.draw(st.sampled_from(TABLE_KINDS), label="table kind")), raises("table")
    elif bad == "kappa":
        kwargs["kappa"], expect = (
            data.draw(st.sampled_from([-1.0, math.nan, math.inf, True, "1", [1.0]])),
            raises("kappa"),
        )
    elif bad == "chunk_size":
        kwargs["chunk_size"], expect = data.draw(st.sampled_from(BAD_INT)), raises("chunk_size")
    elif bad == "exclude_mask":
        exclude = data.draw(
            st.sampled_from(
                [_mask(0).float(), torch.zeros(V + 1, dtype=torch.bool), "x", torch.ones(V, dtype=torch.bool)]
            )
        )
        expect = raises("exclude_mask")
    elif bad == "ignore_index":
        kwargs["ignore_index"], expect = data.draw(st.sampled_from(PARAMS["ignore_index"].bad)), raises("ignore_index")
    if data.draw(st.booleans(), label="class"):

        def run() -> Tensor:
            metric = VMFPerplexity(**kwargs)
            metric.update(b.pred, b.ids, b.table, exclude)
            return metric.compute()

        check(run, expect)
    else:
        check(lambda: vmf_perplexity(b.pred, b.ids, b.table, exclude_mask=exclude, **kwargs), expect)


def _brier_lm_case(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(2, 6), (1, 3), (6,), (2, 0)]), label="shape")
    s1, s2, target = _ids(data, shape, 4), _ids(data, shape, 4), _ids(data, shape, 4)
    max_n = data.draw(st.integers(1, 4), label="max_n")
    ignore = data.draw(st.sampled_from([None, 3]), label="ignore_index")
    bad = data.draw(st.sampled_from(["", "sample1", "sample2", "target", "target:3d", "max_n", "ignore_index"]))
    expect = NAN_OK
    if bad in ("sample1", "sample2", "target"):
        kind = data.draw(st.sampled_from(["float", "bool", "list", "shape"]), label="kind")
        value = {"sample1": s1, "sample2": s2, "target": target}[bad]
        value = (
            value[..., :-1]
            if kind == "shape" and value.shape[-1]
            else _bad_ids(value, kind if kind != "shape" else "float")
        )
        s1, s2, target = (
            (value if bad == "sample1" else s1),
            (value if bad == "sample2" else s2),
            (value if bad == "target" else target),
        )
        expect = raises(bad)
    elif bad == "target:3d":
        target, expect = target.reshape(1, 1, *target.shape), raises("target")
    elif bad == "max_n":
        max_n, expect = data.draw(st.sampled_from(BAD_INT)), raises("max_n")
    elif bad == "ignore_index":
        ignore, expect = data.draw(st.sampled_from(PARAMS["ignore_index"].bad)), raises("ignore_index")
    if data.draw(st.booleans(), label="class"):

        def run() -> Tensor:
            metric = BrierLM(max_n=max_n, ignore_index=ignore)
            metric.update(s1, s2, target)
            return metric.compute()

        check(run, expect)
    else:
        check(lambda: brier_lm(s1, s2, target, max_n=max_n, ignore_index=ignore), expect)


def _prediction_spread_case(data: st.DataObject) -> None:
    pred_ids, target = _ids(data, (2, 5)), _ids(data, (2, 5))
    num_classes = data.draw(st.sampled_from([V, V + 3]), label="num_classes")
    ignore = data.draw(st.sampled_from([None, 4]), label="ignore_index")
    bad = data.draw(
        st.sampled_from(
            ["", "pred_ids", "pred_ids:range", "target", "target:shape", "num_classes", "ignore_index", "empty"]
        )
    )
    expect = FINITE
    if bad == "pred_ids":
        pred_ids, expect = _bad_ids(pred_ids, data.draw(st.sampled_from(["float", "bool", "list"]))), raises("pred_ids")
    elif bad == "pred_ids:range":
        pred_ids, ignore = pred_ids.clone(), None
        pred_ids[0, 0] = data.draw(st.sampled_from([-1, num_classes]))
        expect = raises("pred_ids")
    elif bad == "target":
        target, expect = _bad_ids(target, data.draw(st.sampled_from(["float", "bool", "list"]))), raises("target")
    elif bad == "target:shape":
        target, ignore, expect = target[:, :3], 4, raises("target")
    elif bad == "num_classes":
        num_classes, expect = data.draw(st.sampled_from(BAD_INT)), raises("num_classes")
    elif bad == "ignore_index":
        ignore, expect = data.draw(st.sampled_from(PARAMS["ignore_index"].bad)), raises("ignore_index")
    elif bad == "empty":
        pred_ids, target = pred_ids[:0], target[:0]

    if data.draw(st.booleans(), label="class"):

        def run() -> dict[str, Tensor]:
            metric = PredictionSpread(num_classes=num_classes, ignore_index=ignore)
            metric.update(pred_ids, target)
            return metric.compute()

        check(run, expect)
    else:
        check(lambda: prediction_spread(pred_ids, num_classes, target, ignore_index=ignore), expect)


METRIC_CASES = {
    "neighbor_accuracy": _neighbor_accuracy_case,
    "vmf_perplexity": _vmf_perplexity_case,
    "brier_lm": _brier_lm_case,
    "prediction_spread": _prediction_spread_case,
}


@PROPERTY
@given(data=st.data())
def test_metrics(data: st.DataObject) -> None:
    METRIC_CASES[data.draw(st.sampled_from(sorted(METRIC_CASES)), label="metric")](data)


# ---------------------------------------------------------------------------- vMF distribution functions
@PROPERTY
@given(data=st.data())
def test_vmf_distribution_functions(data: st.DataObject) -> None:
    fn = data.draw(st.sampled_from(["fit_kappa", "vmf_sample", "vmf_log_partition", "vmf_log_prob"]), label="fn")
    b = draw_batch(data, None)
    options = {
        "fit_kappa": {
            "kappa_max": (st.floats(1, 1e4), (0.0, *BAD_REAL)),
            "tol": (st.floats(1e-6, 1e-3), (0.0, *BAD_REAL)),
            "max_iter": (st.integers(1, 12), BAD_INT),
        },
        "vmf_sample": {
            "num_samples": (st.integers(1, 3), BAD_INT),
            "generator": (st.integers(0, 9).map(_generator), ("seed", 3)),
        },
        "vmf_log_partition": {"kappa": (st.sampled_from([None, 0.0, 3.0]), (-1.0, math.nan, math.inf, True, "1"))},
        "vmf_log_prob": {"kappa": (st.sampled_from([None, 0.0, 3.0]), (-1.0, math.nan, math.inf, True, "1"))},
    }[fn] | {"chunk_size": (st.integers(1, 9), BAD_INT)}
    kwargs = {name: data.draw(valid, label=name) for name, (valid, _) in options.items()}
    tensors = ["pred", "table"] + (["ids"] if fn in ("fit_kappa", "vmf_log_prob") else [])
    arg, kind = draw_corruption(data, list(options), tensors)
    expect = FINITE
    if kind is None and arg:
        kwargs[arg] = data.draw(st.sampled_from(options[arg][1]), label=f"bad {arg}")
        expect = raises(arg)
    else:
        expect = apply_tensor_corruption(b, arg, kind)
        if arg == "ids":
            expect = raises("target")
        strict = fn in ("fit_kappa", "vmf_sample")  # a NaN κ or a NaN draw would be silently wrong
        if expect.what == "nonfinite" and strict:
            expect = raises("pred")
        if arg == "pred" and kind == "empty" and fn == "fit_kappa":
            expect = raises("pred")
    if fn == "fit_kappa":
        check(lambda: CF.fit_kappa(b.pred, b.ids, b.table, **kwargs), expect)
    elif fn == "vmf_sample":
        check(lambda: CF.vmf_sample(b.pred, b.table, **kwargs), expect)
    elif fn == "vmf_log_partition":
        check(lambda: CF.vmf_log_partition(b.pred, b.table, **kwargs), expect)
    else:
        check(lambda: CF.vmf_log_prob(b.pred, b.ids, b.table, **kwargs), expect)
