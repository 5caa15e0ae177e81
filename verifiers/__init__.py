"""Verifiers: one protocol, one gate (the only caller of `verify`), one module per source."""
