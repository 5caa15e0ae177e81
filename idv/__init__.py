"""idv: consent-gated identity verification. This package is the composition root."""

__version__ = "0.1.0"
