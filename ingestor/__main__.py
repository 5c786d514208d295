"""`python -m ingestor`: the same as the `ingestor` command."""

from ingestor.cli.commands import main

raise SystemExit(main())
