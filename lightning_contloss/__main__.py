"""``python -m lightning_contloss``: the same as the ``lightning-contloss`` console script."""

import sys

from lightning_contloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
