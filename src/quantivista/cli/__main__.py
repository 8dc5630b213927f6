"""`python -m quantivista.cli`: the same as the `qv` script."""

from quantivista.cli import main

main()
