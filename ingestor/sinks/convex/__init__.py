"""The Convex sink: every op spooled durably, then delivered in FIFO batches, exactly once.

`factory` opens it (and its history reader) from the environment and the command line; `config`
holds its settings; `sink` is the write side and the delivery loop; `spool*` the durable FIFO in the
state directory; `calls` one retried mutation; `staging` ops too large for one call; `dead_letter`
what Convex refuses for good; `client` the HTTP API; `deployment` which deployment and key;
`history` the read side for `ingestor show`. Nothing is imported here: the CLI names the package
(`deployment`'s flags) without loading the sink's dependencies.
"""
