"""``python -m semseg`` runs the command line (also what ``torchrun -m semseg`` starts)."""

from semseg.cli import main

main()
