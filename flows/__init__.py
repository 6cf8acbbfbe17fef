"""Prefect flows and deployments; thin wrappers over ``pipeline``."""
