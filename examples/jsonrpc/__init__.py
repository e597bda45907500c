"""A JSON request/reply service on the base handler: ``python -m examples.jsonrpc``."""
