"""``python -m cifar_helpers``: see :mod:`cifar_helpers.cli`."""

from cifar_helpers.cli import main

raise SystemExit(main(prog="python -m cifar_helpers"))
