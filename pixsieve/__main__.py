"""``python -m pixsieve`` runs the command-line interface."""

from pixsieve.cli import main

main()
