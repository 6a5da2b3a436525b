"""Allow ``python -m peernet``."""

from peernet.cli import main

main()
