"""``python -m recpack`` runs the command-line interface."""

from .cli import main

main()
