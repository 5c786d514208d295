"""The command line: `commands` parses it and runs `run`, `replay` and `show` (mapping the errors of
`ingestor.errors` to exit statuses); `show` and `show_calls` render what a store holds."""
