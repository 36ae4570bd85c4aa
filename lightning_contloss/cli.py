"""The ``lightning-contloss`` command: LightningCLI's fit/validate/test/predict plus ``compare``.

``fit``/``validate``/``test``/``predict`` are Lightning's own (``--config ptb_cosine.yaml``: a
config shipped with the package, see :mod:`lightning_contloss._configs`, or a path), with
``data.vocab_size`` linked to ``model.init_args.vocab_size`` so no config repeats V.
``compare`` is the main job: see :mod:`lightning_contloss.compare`. A missing optional
dependency (the ``demo`` extra) is one line naming the extra, before any work.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from lightning_contloss._configs import UnknownConfigError, config_names, resolve_config_args
from lightning_contloss._extras import MissingExtraError, missing_extra, require_extra
from lightning_contloss.compare.runner import compare_main

__all__ = ["main", "make_cli"]

USAGE = f"""usage: lightning-contloss {{fit,validate,test,predict,compare}} ...

  compare    train the same LM with softmax and continuous heads for equal wall-clock budgets,
             write runs/compare-<timestamp>/report.md and report.png (see: compare --help)
  fit        LightningCLI: train a model from a config, e.g. --config ptb_cosine.yaml
  validate   LightningCLI: validate a model
  test       LightningCLI: test a model
  predict    LightningCLI: predict with a model

configs shipped with the package (pass by name): {", ".join(config_names())}
"""
# What LightningCLI imports: jsonargparse[signatures], from the demo extra.
CLI_MODULES = ("jsonargparse", "docstring_parser", "typeshed_client")


def make_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """Build the LightningCLI over any LightningModule and the example datamodules.

    Args:
        args: the arguments (``sys.argv[1:]`` when ``None``); a ``--config`` that names a packaged
            config (``ptb_cosine.yaml``) is that config.
        run: run the sub-command (``False`` only parses and instantiates).

    Example:
        >>> cli = make_cli(["--model=lightning_contloss.examples.SoftmaxLM", "--model.d_model=16",
        ...                 "--model.n_heads=2", "--data=lightning_contloss.examples.PTBDataModule",
        ...                 "--data.max_train_tokens=1000", "--trainer.logger=false"], run=False)
        >>> type(cli).__name__, cli.model.hparams["vocab_size"]
        ('ContLossCLI', 10001)
    """
    if args is None:
        # LightningCLI reads the command line itself and warns when given args beside it, so the
        # packaged configs' paths go into sys.argv.
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
        cli_args = None
    else:
        cli_args = resolve_config_args(args)
    # Imported here: LightningCLI needs jsonargparse (the demo extra), which `compare` does not.
    import lightning as L
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class ContLossCLI(LightningCLI):
        """LightningCLI whose datamodule gives the model its vocabulary size (``data.vocab_size``)."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")

        def before_instantiate_classes(self) -> None:
            # jsonargparse turns an error raised while building a class into a page of usage,
            # so the optional packages a class declares (`requires`) are checked here first.
            config = self.config[self.subcommand] if self.subcommand else self.config
            for key in ("model", "data"):
                cls = _class_of(config.get(key))
                if cls is not None:
                    require_extra(getattr(cls, "requires", ()), cls.__name__)

    return ContLossCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=cli_args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def _class_of(value: Any) -> type | None:
    """The class a parsed ``class_path`` names, or ``None``."""
    path = getattr(value, "class_path", None)
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # jsonargparse reports it in its own words
    return cls if isinstance(cls, type) else None


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
    missing = missing_extra(CLI_MODULES, f"lightning-contloss {args[0]} (LightningCLI)")
    try:
        if missing is not None:
            raise MissingExtraError(missing)
        make_cli(None if argv is None else args)
    except (MissingExtraError, UnknownConfigError) as err:
        print(f"lightning-contloss: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else 1
    return 0
