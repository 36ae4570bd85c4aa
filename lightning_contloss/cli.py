"""The ``lightning-contloss`` command: LightningCLI's fit/validate/test/predict plus ``compare``.

``fit``/``validate``/``test``/``predict`` are Lightning's own (``--config configs/ptb_cosine.yaml``),
with ``data.vocab_size`` linked to ``model.init_args.vocab_size`` so no config repeats V.
``compare`` is the main job: see :mod:`lightning_contloss.compare`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning_contloss.compare.runner import compare_main

__all__ = ["main", "make_cli"]

USAGE = """usage: lightning-contloss {fit,validate,test,predict,compare} ...

  compare    train the same LM with softmax and continuous heads for equal wall-clock budgets,
             write runs/compare-<timestamp>/report.md and report.png (see: compare --help)
  fit        LightningCLI: train a model from a config, e.g. --config configs/ptb_cosine.yaml
  validate   LightningCLI: validate a model
  test       LightningCLI: test a model
  predict    LightningCLI: predict with a model
"""


def make_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """Build the LightningCLI over any LightningModule and the example datamodules.

    Args:
        args: the arguments (``sys.argv[1:]`` when ``None``).
        run: run the sub-command (``False`` only parses and instantiates).

    Example:
        >>> cli = make_cli(["--model=lightning_contloss.examples.SoftmaxLM", "--model.d_model=16",
        ...                 "--model.n_heads=2", "--data=lightning_contloss.examples.PTBDataModule",
        ...                 "--data.max_train_tokens=1000", "--trainer.logger=false"], run=False)
        >>> type(cli).__name__, cli.model.hparams["vocab_size"]
        ('ContLossCLI', 10001)
    """
    # Imported here: LightningCLI needs jsonargparse (the demo extra), which `compare` does not.
    import lightning as L
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class ContLossCLI(LightningCLI):
        """LightningCLI whose datamodule gives the model its vocabulary size (``data.vocab_size``)."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")

    return ContLossCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``lightning-contloss``; returns the exit code.

    Args:
        argv: the arguments (``sys.argv[1:]`` when ``None``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] == "compare":
        return compare_main(args[1:])
    try:
        make_cli(args)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else 1
    return 0
