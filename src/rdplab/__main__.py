"""``python -m rdplab``: the command line."""

from rdplab.cli import main

main()
