"""A chat room service in one process on the base handler: ``python -m examples.chat``."""
