"""What only this repository's tests use: a site of CSC processes to attack from outside
(:mod:`tests.support.process_site`) and header documents made by hand
(:mod:`tests.support.headers`). Users' tests have :mod:`sim.testkit` instead; runtime
code never imports this (an import-linter contract in ``pyproject.toml``)."""
