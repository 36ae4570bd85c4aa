"""Saving and reloading a converted Hugging Face model, and the generation config it carries.

Models are built from tiny configs with random weights; nothing is downloaded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")

from test_integrations_hf import GPT2Continuous, T5Continuous, build, ids


@pytest.fixture
def hf_log() -> Iterator[list[str]]:
    """Messages transformers logs at WARNING or above (its logger does not propagate to pytest's caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- item 1: the generation config


@pytest.mark.parametrize("cls", [GPT2Continuous, T5Continuous], ids=["gpt2", "t5"])
def test_generation_config_of_a_converted_model_saves(cls: type, tmp_path: Path) -> None:
    lm = build(cls)
    # Before the fix: "GenerationConfig is invalid: `early_stopping` ... `num_beams` is set to None".
    lm.model.generation_config.save_pretrained(tmp_path)
    assert lm.model.generation_config.early_stopping is None  # the model's own config is left as it was


def test_greedy_generate_after_the_swap_warns_about_nothing(hf_log: list[str]) -> None:
    lm = build(GPT2Continuous).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            lm.model.generate(ids(2, 3), max_new_tokens=3, do_sample=False)
    # Before the fix: "The following generation flags are not valid and may be ignored: ['early_stopping']".
    assert not [m for m in hf_log if "early_stopping" in m], hf_log
