"""Allows ``python -m syncwarden``, identical to the ``syncwarden`` console script."""

from syncwarden.cli import main

main()
