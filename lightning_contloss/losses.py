"""The continuous losses as differentiable torchmetrics Metrics, bound to a target table.

Each class wraps one function of :mod:`lightning_contloss.functional`. ``forward`` returns the
batch loss with gradients (use it as the training loss); ``update``/``compute`` accumulate the
token-weighted mean over an epoch (sum and count states, ``dist_reduce_fx="sum"``). Each class
declares ``decode_space``, the similarity a decoder must rank by for that loss. Losses compose
with torchmetrics arithmetic: ``VMFLoss() + 0.1 * CosineLoss()`` is a loss too; use
:func:`decode_space_of` and :func:`bind_targets` on such compositions.

The losses a command line can name (``ContinuousLM(loss="vmf")``, ``compare --runs
linear:vmf:random``) are registered next to their classes with :func:`register_loss`;
:func:`loss_names` lists them and :func:`make_loss` builds one, so a new loss reaches the command
line without any other file changing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.metric import CompositionalMetric

from lightning_contloss.functional._checks import Batch, check_ignore_index, check_table, sum_count
from lightning_contloss.functional.cosine import _cosine_loss_tokens
from lightning_contloss.functional.info_nce import (
    DEFAULT_NUM_NEGATIVES,
    DEFAULT_TEMPERATURE,
    _check_info_nce_loss_args,
    _info_nce_loss_tokens,
)
from lightning_contloss.functional.l2 import _l2_loss_tokens
from lightning_contloss.functional.max_margin import _check_max_margin_loss_args, _max_margin_loss_tokens
from lightning_contloss.functional.rewe import DEFAULT_LAM, _check_rewe_loss_args, _rewe_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.functional.syn_margin import (
    DEFAULT_SYN_MARGIN,
    _check_syn_margin_loss_args,
    _syn_margin_loss_tokens,
)
from lightning_contloss.functional.vmf import (
    DEFAULT_KUMAR_LAMBDA,
    DEFAULT_LAMBDA1,
    DEFAULT_LAMBDA2,
    LOSS_DEFAULT_KAPPA_MIN,
    LOSS_DEFAULT_REGULARIZER,
    _check_vmf_nll_args,
    _vmf_nll_tokens,
    vmf_concentration,
)
from lightning_contloss.targets import TargetEmbeddings

__all__ = [
    "ContinuousLoss",
    "CosineLoss",
    "EnergyLoss",
    "InfoNCELoss",
    "L2Loss",
    "MaxMarginLoss",
    "ReWELoss",
    "SynMarginLoss",
    "VMFLoss",
    "bind_targets",
    "decode_space_of",
    "loss_names",
    "make_loss",
    "register_loss",
]

Targets = TargetEmbeddings | Tensor

# The smallest τ a learned InfoNCE temperature may reach (CLIP caps 1/τ at 100 the same way).
MIN_LEARNED_TEMPERATURE = 0.01

# Attributes torchmetrics' forward changes while it runs and restores only on success.
_FORWARD_FLAGS = (
    "_update_count",
    "_to_sync",
    "_should_unsync",
    "compute_on_cpu",
    "_enable_grad",
    "_is_synced",
    "_computed",
)


class _TableBoundLoss(Metric):
    """Sum/count states, the epoch mean, and a target table that is read but never owned."""

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    decode_space: ClassVar[Space] = "cosine"

    loss_sum: Tensor
    count: Tensor

    def __init__(self, targets: Targets | None = None, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        check_ignore_index(ignore_index)
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("loss_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")
        # Stored in __dict__ so nn.Module does not register it: the LightningModule owns the
        # table (one copy in state_dict, moved with the model); the loss only reads it.
        self.__dict__["_targets"] = None
        if targets is not None:
            self.bind(targets)

    def bind(self, targets: Targets) -> _TableBoundLoss:
        """Use ``targets`` (a TargetEmbeddings or a ``[V, D]`` tensor) as the target table; returns self.

        Example:
            >>> loss = CosineLoss().bind(TargetEmbeddings.random(10, 4))
            >>> loss.targets.dim
            4
        """
        if isinstance(targets, TargetEmbeddings):
            self.__dict__["_targets"] = targets
        elif isinstance(targets, Tensor):
            check_table(targets, "targets")
            self.__dict__["_targets"] = targets.detach()
        else:
            raise ValueError(f"targets must be a TargetEmbeddings or a [V, D] tensor, got {type(targets).__name__}")
        return self

    @property
    def targets(self) -> Targets | None:
        """The bound target table, or ``None`` before :meth:`bind`."""
        targets: Targets | None = self.__dict__["_targets"]
        return targets

    def _table(self, like: Tensor) -> Tensor:
        targets = self.targets
        if targets is None:
            raise RuntimeError(
                f"{type(self).__name__} has no target table; pass targets=... when building it or call "
                ".bind(targets) first"
            )
        if isinstance(targets, TargetEmbeddings):
            # Read on every call: the module may have moved since it was bound.
            return targets.weight
        if targets.device != like.device:
            # A bare tensor does not move with any module; follow the predictions once.
            targets = targets.to(like.device)
            self.__dict__["_targets"] = targets
        return targets

    def _exclude(self) -> Tensor | None:
        targets = self.targets
        if isinstance(targets, TargetEmbeddings) and bool(targets.special_mask.any()):
            return targets.special_mask
        return None

    def _batch(self, *args: Any) -> tuple[Tensor, Tensor]:
        """Loss sum and token count of one batch, differentiable; subclasses define the inputs."""
        raise TypeError(f"{type(self).__name__} must implement _batch; subclass CosineLoss & co. instead")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The loss of this batch, with gradients; the batch is also added to the epoch state."""
        if self.dist_sync_on_step:
            return self._synced_forward(*args, **kwargs)
        # Not torchmetrics' own forward, on purpose. Its reduce-state path (copy the states, reset,
        # update, compute, merge under no_grad) gives the same value and keeps no graph in the
        # states, but it resets before update, so bad input would lose the epoch's state unless
        # wrapped as in _synced_forward, and it costs about ten more small tensor ops a step:
        # measured +0.2-0.4 ms CPU per call (1.03-1.28x the loss's forward + backward) for cosine
        # and vMF at N = 64..2048, D = 300, one thread. So the batch is computed once and added
        # to the states here, setting the three fields torchmetrics' forward sets.
        total, count = self._batch(*args, **kwargs)
        self._accumulate(total.detach(), count)
        self._update_count += 1
        self._computed = None
        value = total / count.clamp_min(1).to(total.dtype)
        self._forward_cache = value  # type: ignore[assignment]
        return value

    def _synced_forward(self, *args: Any, **kwargs: Any) -> Any:
        # torchmetrics' forward resets the state before calling update; if update raises on
        # bad input, the epoch's accumulated state and the grad/sync flags would be lost.
        # States are only ever replaced, never mutated, so keeping references is enough.
        saved = {name: getattr(self, name) for name in (*self._defaults, *_FORWARD_FLAGS)}
        try:
            return super().forward(*args, **kwargs)
        except BaseException:
            for name, value in saved.items():
                setattr(self, name, value)
            raise

    def _accumulate(self, total: Tensor, count: Tensor) -> None:
        # Out of place, so the batch value computed in forward keeps its graph.
        self.loss_sum = self.loss_sum + total
        self.count = self.count + count

    def compute(self) -> Tensor:
        """Token-weighted mean of the loss over everything accumulated; 0 when nothing counted."""
        return self.loss_sum / self.count.clamp_min(1).to(self.loss_sum.dtype)

    def extra_repr(self) -> str:
        targets = self.targets
        if targets is None:
            table = "unbound"
        else:
            weight = targets.weight if isinstance(targets, TargetEmbeddings) else targets
            table = f"table={tuple(weight.shape)}"
        return f"{table}, ignore_index={self.ignore_index}, decode_space={self.decode_space!r}"


class ContinuousLoss(_TableBoundLoss):
    """Base of the losses called as ``loss(pred [..., D], ids [...])``."""

    def update(self, pred: Tensor, ids: Tensor) -> None:
        """Add the loss of a batch to the running sum and count."""
        self._accumulate(*self._batch(pred, ids))

    def _batch(self, pred: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        return sum_count(*self._tokens(pred, ids, self._table(pred)))

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        """Per-token losses and their batch: the functional maths, with this loss's hyper-parameters."""
        raise TypeError(f"{type(self).__name__} must implement _tokens; subclass CosineLoss & co. instead")


_Loss = TypeVar("_Loss", bound=type[ContinuousLoss])
# name -> (class, the constructor arguments the name fixes); filled by @register_loss.
_REGISTRY: dict[str, tuple[type[ContinuousLoss], dict[str, Any]]] = {}


def register_loss(name: str, **fixed: Any) -> Callable[[_Loss], _Loss]:
    """Class decorator: make a :class:`ContinuousLoss` buildable by ``name`` (:func:`make_loss`).

    Args:
        name: the name on the command line (lower case, no spaces), unique.
        fixed: constructor arguments the name stands for, e.g. ``negatives="in_batch"``.

    Written above the class, as ``@register_loss("cosine")`` is above :class:`CosineLoss`.
    Registering a class again under its own name changes nothing.

    Example:
        >>> register_loss("cosine")(CosineLoss) is CosineLoss
        True
    """
    if not isinstance(name, str) or not name or name != name.strip().lower() or ":" in name or " " in name:
        raise ValueError(f"a loss name must be a non-empty lower-case word without ':' or spaces, got {name!r}")

    def register(cls: _Loss) -> _Loss:
        if not (isinstance(cls, type) and issubclass(cls, ContinuousLoss)):
            raise TypeError(f"register_loss takes a ContinuousLoss subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"the loss name {name!r} is taken by {_REGISTRY[name][0].__name__}; choose another")
        _REGISTRY[name] = (cls, dict(fixed))
        return cls

    return register


def loss_names() -> tuple[str, ...]:
    """The registered loss names, in registration order.

    Example:
        >>> loss_names()
        ('cosine', 'l2', 'maxmargin', 'vmf', 'infonce', 'synmargin', 'energy')
    """
    return tuple(_REGISTRY)


def make_loss(name: str, *, ignore_index: int | None = None, **options: Any) -> ContinuousLoss:
    """The registered loss ``name``, unbound, built from the ``options`` its constructor takes.

    Options the loss's constructor has no parameter for are dropped, so one set of command-line
    options (``temperature``, ``margin``, ``lambda1``, …) serves every loss; the arguments the
    name fixes (see :func:`register_loss`) override them.

    Args:
        name: one of :func:`loss_names`.
        ignore_index: target id to skip (padding).
        options: constructor arguments, by name.

    Example:
        >>> make_loss("maxmargin", margin=0.2, temperature=0.05).margin  # temperature is not its
        0.2
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(_REGISTRY)}")
    cls, fixed = _REGISTRY[name]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in options.items() if key in accepted}
    return cls(ignore_index=ignore_index, **{**kwargs, **fixed})


@register_loss("cosine")
class CosineLoss(ContinuousLoss):
    """Cosine loss ``1 − cos(ê, e_w)`` (see :func:`~lightning_contloss.functional.cosine_loss`).

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = CosineLoss(TargetEmbeddings.random(100, 16), ignore_index=-100)
        >>> pred = torch.randn(2, 5, 16, requires_grad=True)
        >>> ids = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
        >>> batch = loss(pred, ids)
        >>> batch.backward()
        >>> pred.grad[0, 3].abs().sum().item(), loss.decode_space
        (0.0, 'cosine')
    """

    decode_space: ClassVar[Space] = "cosine"

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _cosine_loss_tokens(pred, ids, table, ignore_index=self.ignore_index)


@register_loss("l2")
class L2Loss(ContinuousLoss):
    """Squared L2 loss ``‖ê − e_w‖²``, summed over D (see :func:`~lightning_contloss.functional.l2_loss`).

    It trains the norm of ``pred`` as well as its direction, so it decodes by L2 distance.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = L2Loss(torch.eye(3))
        >>> loss(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0]))
        tensor(1.)
        >>> loss.decode_space
        'l2'
    """

    decode_space: ClassVar[Space] = "l2"

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _l2_loss_tokens(pred, ids, table, ignore_index=self.ignore_index)


@register_loss("maxmargin")
class MaxMarginLoss(ContinuousLoss):
    """Hinge loss with an informative negative (see :func:`~lightning_contloss.functional.max_margin_loss`).

    Special ids of a bound TargetEmbeddings are never used as negatives. Decodes by cosine.
    The default, the most informative negative of the whole vocabulary, is the one that learns
    on PTB: 2.39× the unigram baseline after 150 steps, where in-batch negatives gave 1.11× and
    1,024 sampled ones collapsed onto 2 words (``benchmarks/results/quality.md``). Its search
    costs ``O(V·D)`` a token, what a softmax's logits cost.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        margin: the hinge margin.
        negatives: ``"informative"`` (whole vocabulary, chunked), ``"sampled"`` or ``"in_batch"``.
        num_negatives: K for ``negatives="sampled"``.
        chunk_size: rows of the table scored at once in the search.
        generator: random generator for ``negatives="sampled"``.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = MaxMarginLoss(TargetEmbeddings.random(50, 8), negatives="in_batch")
        >>> bool(loss(torch.randn(6, 8), torch.arange(6)) >= 0)
        True
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        margin: float = 0.5,
        negatives: Literal["informative", "sampled", "in_batch"] = "informative",
        num_negatives: int = 1024,
        chunk_size: int = 2048,
        generator: torch.Generator | None = None,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_max_margin_loss_args(margin, negatives, num_negatives, chunk_size, generator)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.margin = margin
        self.negatives = negatives
        self.num_negatives = num_negatives
        self.chunk_size = chunk_size
        self.generator = generator

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _max_margin_loss_tokens(
            pred,
            ids,
            table,
            margin=self.margin,
            negatives=self.negatives,
            num_negatives=self.num_negatives,
            chunk_size=self.chunk_size,
            generator=self.generator,
            exclude=self._exclude(),
            ignore_index=self.ignore_index,
        )


@register_loss("vmf")
class VMFLoss(ContinuousLoss):
    """Regularised von Mises-Fisher NLL (see :func:`~lightning_contloss.functional.vmf_nll`).

    Its defaults are the setting that learns from the first step: Kumar & Tsvetkov's own
    regulariser ``log(1 + κ)·(0.2 − cos)`` and a concentration floor ``kappa_min=1``. The
    reference code's ``regularizer="default"`` form (``vmf_nll``'s default) collapsed to κ = 0 on a
    PTB Transformer LM, below the unigram baseline (``benchmarks/results/quality.md``).

    ``decode_space`` is ``"cosine"``: for a fixed prediction the vMF density ranks words by
    ``κ·cos(ê, e_w)`` and κ is the same for every word. That is inner-product ranking on a
    normalised table, and stays right when the table was built with ``normalize=False``, since
    the loss itself normalises the rows.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        lambda1: weight of the κ penalty (reg1, ``regularizer="default"`` only); 0.02 as in the reference code.
        lambda2: scale of the dot product (reg2, ``regularizer="default"`` only); 0.1 as in the reference code.
        approx: use Kumar & Tsvetkov's approximation of ``log C_m`` (gradient only).
        regularizer: ``"kumar"`` (default), ``log(1 + κ)·(kumar_lambda − cos)``, or ``"default"``
            (reg1 and reg2, the reference code's ``_nllvmf``).
        kumar_lambda: λ of the ``"kumar"`` form, in [0, 1); 0.2 as in the reference code.
        kappa_min: concentration floor, κ = kappa_min + ‖ê‖ (default 1; 0 for κ = ‖ê‖).
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = VMFLoss(TargetEmbeddings.random(100, 32))  # regularizer="kumar", kappa_min=1.0
        >>> pred = torch.randn(4, 32, requires_grad=True)
        >>> loss(pred, torch.tensor([1, 2, 3, 4])).backward()
        >>> bool(torch.isfinite(pred.grad).all())
        True
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        lambda1: float = DEFAULT_LAMBDA1,
        lambda2: float = DEFAULT_LAMBDA2,
        approx: bool = False,
        regularizer: Literal["default", "kumar"] = LOSS_DEFAULT_REGULARIZER,
        kumar_lambda: float = DEFAULT_KUMAR_LAMBDA,
        kappa_min: float = LOSS_DEFAULT_KAPPA_MIN,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_vmf_nll_args(lambda1, lambda2, approx, regularizer, kumar_lambda, kappa_min)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.approx = approx
        self.regularizer = regularizer
        self.kumar_lambda = kumar_lambda
        self.kappa_min = kappa_min

    def concentration(self, pred: Tensor) -> Tensor:
        """``κ·ê/‖ê‖`` for this loss's κ (see :func:`~lightning_contloss.functional.vmf_concentration`).

        What a likelihood metric that reads κ from the norm must be given.

        Example:
            >>> VMFLoss(kappa_min=2.0).concentration(torch.tensor([[0.0, 1.0]]))
            tensor([[0., 3.]])
        """
        return vmf_concentration(pred, self.kappa_min)

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _vmf_nll_tokens(
            pred,
            ids,
            table,
            lambda1=self.lambda1,
            lambda2=self.lambda2,
            approx=self.approx,
            ignore_index=self.ignore_index,
            regularizer=self.regularizer,
            kumar_lambda=self.kumar_lambda,
            kappa_min=self.kappa_min,
        )


@register_loss("infonce")
class InfoNCELoss(ContinuousLoss):
    """InfoNCE with K negatives shared by a batch (see :func:`~lightning_contloss.functional.info_nce_loss`).

    Its logits are ``cos / temperature``, so it decodes by cosine. Special ids of a bound
    TargetEmbeddings are never used as negatives.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        temperature: τ > 0; with ``learn_temperature`` its starting value.
        learn_temperature: learn τ with the model (CLIP's parametrisation: a parameter
            ``log_temperature``, τ = exp of it, clamped to at least ``MIN_LEARNED_TEMPERATURE``);
            the optimiser sees it through the model's ``parameters()``.
        num_negatives: K.
        sampler: ``"uniform"`` or ``"unigram"``.
        counts: ``[V]`` token counts for ``sampler="unigram"`` (kept as a non-persistent buffer).
        power: exponent applied to ``counts``.
        generator: random generator for the draws.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = InfoNCELoss(TargetEmbeddings.random(100, 16), num_negatives=32)
        >>> bool(loss(torch.randn(8, 16), torch.arange(8)) > 0)
        True
        >>> learned = InfoNCELoss(TargetEmbeddings.random(100, 16), num_negatives=32, learn_temperature=True)
        >>> learned(torch.randn(8, 16), torch.arange(8)).backward()
        >>> round(learned.current_temperature, 3), learned.log_temperature.grad is not None
        (0.1, True)
    """

    decode_space: ClassVar[Space] = "cosine"
    counts: Tensor | None

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        learn_temperature: bool = False,
        num_negatives: int = DEFAULT_NUM_NEGATIVES,
        sampler: Literal["uniform", "unigram"] = "uniform",
        counts: Tensor | None = None,
        power: float = 0.75,
        generator: torch.Generator | None = None,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(learn_temperature, bool):
            raise ValueError(f"learn_temperature must be True or False, got {learn_temperature!r}")
        if counts is not None and not isinstance(counts, Tensor):
            try:  # a list or numpy array of counts is fine too
                counts = torch.as_tensor(counts)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"counts must be a [V] tensor of token counts, got {type(counts).__name__}") from err
        counts = None if counts is None else counts.detach()
        _check_info_nce_loss_args(temperature, num_negatives, sampler, counts, power, generator)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        if learn_temperature and temperature < MIN_LEARNED_TEMPERATURE:
            raise ValueError(
                f"learn_temperature starts from temperature={temperature}, below the floor "
                f"{MIN_LEARNED_TEMPERATURE}; start at or above it"
            )
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.power = power
        self.generator = generator
        self.register_buffer("counts", counts, persistent=False)
        # A parameter only when learned, so a fixed-τ loss adds nothing to the optimiser or checkpoint.
        self.log_temperature = (
            torch.nn.Parameter(torch.tensor(math.log(temperature))) if learn_temperature else None
        )

    @property
    def current_temperature(self) -> float:
        """τ as the loss uses it now (the learned value when ``learn_temperature``)."""
        value = self._temperature()
        return float(value.detach()) if isinstance(value, Tensor) else value

    def _temperature(self) -> float | Tensor:
        if self.log_temperature is None:
            return self.temperature
        # The floor keeps the logits bounded (CLIP caps its logit scale the same way).
        return self.log_temperature.exp().clamp(min=MIN_LEARNED_TEMPERATURE)

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _info_nce_loss_tokens(
            pred,
            ids,
            table,
            temperature=self._temperature(),
            num_negatives=self.num_negatives,
            sampler=self.sampler,
            counts=self.counts,
            power=self.power,
            generator=self.generator,
            exclude=self._exclude(),
            ignore_index=self.ignore_index,
        )


@register_loss("synmargin")
class SynMarginLoss(ContinuousLoss):
    """Syn-margin hinge, one synthetic negative a token (see :func:`~lightning_contloss.functional.syn_margin_loss`).

    The negative is built from the prediction and its target (Bhat, Kumar & Tsvetkov, 2019), so
    a token costs ``O(D)`` whatever V is. Only the direction of ``pred`` is trained: decodes by
    cosine.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        margin: the hinge margin, >= 0.
        synthetic: ``"projection"`` (``u_orth``, the paper's syn-margin) or ``"difference"`` (``u_diff``).
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = SynMarginLoss(torch.eye(2))
        >>> loss(torch.tensor([[1.0, 1.0]]), torch.tensor([0])), loss.decode_space
        (tensor(0.5000), 'cosine')
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        margin: float = DEFAULT_SYN_MARGIN,
        synthetic: Literal["projection", "difference"] = "projection",
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_syn_margin_loss_args(margin, synthetic)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.margin = margin
        self.synthetic = synthetic

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _syn_margin_loss_tokens(
            pred, ids, table, margin=self.margin, synthetic=self.synthetic, ignore_index=self.ignore_index
        )


class ReWELoss(_TableBoundLoss):
    """ReWE: ``CE(logits, w) + λ·(1 − cos(ê, e_w))``, called as ``loss(logits, pred, ids)``.

    For models that keep their softmax head and add a regression head (see
    :func:`~lightning_contloss.functional.rewe_loss`). The regression head decodes by cosine.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        lam: λ, the weight of the cosine term.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> loss = ReWELoss(torch.eye(2), lam=1.0)
        >>> loss(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.tensor([0]))
        tensor(0.9860)
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        lam: float = DEFAULT_LAM,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_rewe_loss_args(lam)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.lam = lam

    def update(self, logits: Tensor, pred: Tensor, ids: Tensor) -> None:
        """Add the loss of a batch to the running sum and count."""
        self._accumulate(*self._batch(logits, pred, ids))

    def _batch(self, logits: Tensor, pred: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        table = self._table(pred)
        return sum_count(*_rewe_loss_tokens(logits, pred, ids, table, lam=self.lam, ignore_index=self.ignore_index))


def _operands(metric: Metric) -> list[Metric]:
    if isinstance(metric, CompositionalMetric):
        return [m for m in (metric.metric_a, metric.metric_b) if isinstance(m, Metric)]
    return []


def decode_space_of(metric: Metric) -> Space:
    """The similarity a decoder must rank by for ``metric``, a loss or a composition of losses.

    A composition takes the space of its first loss operand (its main term, by convention:
    write ``VMFLoss() + 0.1 * CosineLoss()``, not the reverse).

    Example:
        >>> decode_space_of(L2Loss() + 0.1 * CosineLoss()), decode_space_of(0.5 * CosineLoss())
        ('l2', 'cosine')
    """
    if isinstance(metric, _TableBoundLoss):
        return metric.decode_space
    for operand in _operands(metric):
        try:
            return decode_space_of(operand)
        except ValueError:
            continue
    raise ValueError(
        f"{type(metric).__name__} is not a continuous loss and contains none; "
        "use CosineLoss, L2Loss, MaxMarginLoss, VMFLoss, InfoNCELoss, SynMarginLoss or ReWELoss"
    )


def bind_targets(metric: Metric, targets: Targets) -> Metric:
    """Bind ``targets`` to every continuous loss inside ``metric`` (a loss or a composition); returns it.

    Example:
        >>> loss = bind_targets(VMFLoss() + 0.1 * CosineLoss(), TargetEmbeddings.random(10, 8))
        >>> loss(torch.randn(3, 8), torch.tensor([1, 2, 3])).shape
        torch.Size([])
    """
    bound = 0
    for module in metric.modules():
        if isinstance(module, _TableBoundLoss):
            module.bind(targets)
            bound += 1
    if bound == 0:
        raise ValueError(f"{type(metric).__name__} contains no continuous loss to bind targets to")
    return metric


# Losses kept in files of their own register themselves when imported; importing them here
# makes every registered name a choice as soon as this module is loaded.
from lightning_contloss.energy_loss import EnergyLoss  # noqa: E402
