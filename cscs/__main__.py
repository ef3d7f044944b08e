"""``python -m cscs`` is the ``cscs`` command."""

from cscs.cli import main

raise SystemExit(main())
