"""Pure tensor maths of lightning-contloss: the continuous losses, the vMF maths and the scoring.

Every loss takes ``(pred [..., D], ids [...], table [V, D], ...)``, supports ``ignore_index``
and ``reduction`` ("mean", "sum" or "none"), computes in at least float32 and returns a
differentiable tensor. :mod:`lightning_contloss.losses` wraps them as torchmetrics Metrics.

Each loss file has two layers, as torchmetrics' ``functional/regression/mse.py`` has: the private
per-token maths ``_<loss>_tokens(pred, ids, table, *, <hyper-parameters>)``, which checks its
tensors and returns ``(per-token losses [N], batch)``, and the public function, which checks its
hyper-parameters, calls the maths by keyword and reduces. A loss class checks the same
hyper-parameters once, in ``__init__``, and calls the same maths on every batch.
"""

from lightning_contloss.functional.cosine import cosine_loss
from lightning_contloss.functional.energy import energy_loss, energy_score
from lightning_contloss.functional.hubness import csls_penalty
from lightning_contloss.functional.info_nce import info_nce_loss
from lightning_contloss.functional.l2 import l2_loss
from lightning_contloss.functional.linear_cross_entropy import linear_cross_entropy
from lightning_contloss.functional.max_margin import max_margin_loss
from lightning_contloss.functional.rewe import rewe_loss
from lightning_contloss.functional.sampled_softmax import sampled_softmax_loss
from lightning_contloss.functional.scoring import (
    SPACES,
    TOKEN_SCORES,
    Space,
    TokenScore,
    pairwise_similarity,
    similarity,
    token_log_scores,
)
from lightning_contloss.functional.syn_margin import syn_margin_loss, synthetic_negative
from lightning_contloss.functional.vmf import vmf_concentration, vmf_nll
from lightning_contloss.functional.vmf_distribution import (
    fit_kappa,
    merge_log_partition,
    sample_from_logits,
    vmf_log_partition,
    vmf_log_prob,
    vmf_sample,
)
from lightning_contloss.functional.vmf_fit import fit_vmf
from lightning_contloss.functional.vmf_normalizer import (
    bessel_ratio,
    log_bessel_iv,
    log_vmf_mode_density,
    log_vmf_normalizer,
)

__all__ = [
    "SPACES",
    "TOKEN_SCORES",
    "Space",
    "TokenScore",
    "bessel_ratio",
    "cosine_loss",
    "csls_penalty",
    "energy_loss",
    "energy_score",
    "fit_kappa",
    "fit_vmf",
    "info_nce_loss",
    "l2_loss",
    "linear_cross_entropy",
    "log_bessel_iv",
    "log_vmf_mode_density",
    "log_vmf_normalizer",
    "max_margin_loss",
    "merge_log_partition",
    "pairwise_similarity",
    "rewe_loss",
    "sample_from_logits",
    "sampled_softmax_loss",
    "similarity",
    "syn_margin_loss",
    "synthetic_negative",
    "token_log_scores",
    "vmf_concentration",
    "vmf_log_partition",
    "vmf_log_prob",
    "vmf_nll",
    "vmf_sample",
]
