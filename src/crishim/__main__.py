"""`python -m crishim` is the `crishim` command."""

from crishim.cli import main

raise SystemExit(main())
