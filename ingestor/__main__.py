"""`python -m ingestor`: the same as the `ingestor` command."""

from ingestor.cli import main

raise SystemExit(main())
