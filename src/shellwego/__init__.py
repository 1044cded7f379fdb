"""ShellWeGo: a self-hosted platform as a service."""

__version__ = "0.1.0"
