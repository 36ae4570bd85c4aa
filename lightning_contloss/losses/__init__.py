"""The continuous losses as differentiable torchmetrics Metrics, bound to a target table.

Each class wraps one function of :mod:`lightning_contloss.functional` and lives in a file of its
own beside :mod:`~lightning_contloss.losses.base` (the Metric base) and
:mod:`~lightning_contloss.losses.registry` (:func:`register_loss`, :func:`make_loss`). ``forward``
returns the batch loss with gradients (use it as the training loss); ``update``/``compute``
accumulate the token-weighted mean over an epoch. Each class declares ``decode_space``, the
similarity a decoder must rank by for that loss. Losses compose with torchmetrics arithmetic:
``VMFLoss() + 0.1 * CosineLoss()`` is a loss too; use :func:`decode_space_of` and
:func:`bind_targets` on such compositions.

Importing this package imports every loss module, and each registers its name with
:func:`register_loss`; so the names a command line can give (``ContinuousLM(loss="vmf")``,
``compare --runs linear:vmf:random``) are all known once any of it is loaded.
"""

# isort: off
# The order of these imports is the order loss_names() lists the names in: simplest first.
from lightning_contloss.losses.base import ContinuousLoss
from lightning_contloss.losses.registry import loss_names, loss_options, make_loss, register_loss
from lightning_contloss.losses.cosine import CosineLoss
from lightning_contloss.losses.l2 import L2Loss
from lightning_contloss.losses.max_margin import MaxMarginLoss
from lightning_contloss.losses.vmf import VMFLoss
from lightning_contloss.losses.info_nce import InfoNCELoss
from lightning_contloss.losses.syn_margin import SynMarginLoss
from lightning_contloss.losses.energy import EnergyLoss
from lightning_contloss.losses.rewe import ReWELoss
from lightning_contloss.losses.composition import bind_targets, decode_space_of, ignore_index_of

# isort: on

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
    "ignore_index_of",
    "loss_names",
    "loss_options",
    "make_loss",
    "register_loss",
]
