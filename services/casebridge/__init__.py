"""CaseBridge: sealed, agreement-routed case events between counter-trafficking agencies."""

__version__ = "0.1.0.dev0"
