"""The node agent: registers, heartbeats, reconciles assigned instances, ships logs.

``Agent`` (in :mod:`shellwego.agent.daemon`) is the entry point; it reaches the runtime
only through :class:`shellwego.runtime.driver.Driver`. See README.md for the reconcile
algorithm.
"""
