"""The decoding callback and its parts, each an object that works without a ``Trainer``.

- :class:`DecodingCallback` (``decoding_callback.py``): Lightning's hooks → buffer → decode →
  metrics → log;
- :class:`DecodingSession` (``session.py``): the decoder's life: built once per table (and per
  cache folder under DDP), ``ef`` tuning and the exact fall-back, the re-ranking rule, the
  recall reference, checkpoint state;
- :class:`KappaEstimator` (``kappa.py``): κ̂ for the likelihood metrics of a loss without κ;
- :func:`pick_likelihood_rows` (``sampling.py``): which buffered rows ``vmf_ppl`` and BrierLM
  score, a pure function; :class:`LikelihoodScorer` (``likelihood.py``) scores them;
- :class:`PredictionBuffer` (``buffer.py``), :class:`EpochMetrics` (``epoch_metrics.py``) and
  :func:`share_epoch_state` (``epoch_state.py``, the DDP exchange of each epoch).
"""

from lightning_contloss.callbacks.buffer import PredictionBuffer
from lightning_contloss.callbacks.decoding_callback import DecodingCallback
from lightning_contloss.callbacks.epoch_metrics import EpochMetrics
from lightning_contloss.callbacks.epoch_state import share_epoch_state
from lightning_contloss.callbacks.kappa import KAPPA_FIT_TOKENS, KappaEstimator, kappa_fit_tokens, loss_concentration
from lightning_contloss.callbacks.likelihood import LikelihoodScorer
from lightning_contloss.callbacks.sampling import AUTO_METRIC_STRIDE, AUTO_METRIC_TOKENS, pick_likelihood_rows
from lightning_contloss.callbacks.session import DecodingSession

__all__ = [
    "AUTO_METRIC_STRIDE",
    "AUTO_METRIC_TOKENS",
    "KAPPA_FIT_TOKENS",
    "DecodingCallback",
    "DecodingSession",
    "EpochMetrics",
    "KappaEstimator",
    "LikelihoodScorer",
    "PredictionBuffer",
    "kappa_fit_tokens",
    "loss_concentration",
    "pick_likelihood_rows",
    "share_epoch_state",
]
