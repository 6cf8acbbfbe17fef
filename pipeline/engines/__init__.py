"""Engines that run stage chains: local (datatrove executors)."""
