"""Support for the normalizer and golden tests (the expected rows are the JSON files here)."""
