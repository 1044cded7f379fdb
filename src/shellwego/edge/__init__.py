"""The edge: Caddy as the data plane, programmed through its admin API."""
