"""Platform roles: control plane (`server`), node agent, and the all-in-one (`up`)."""
