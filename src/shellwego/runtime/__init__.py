"""Runtimes: the one :class:`~shellwego.runtime.driver.Driver` protocol and its drivers."""
