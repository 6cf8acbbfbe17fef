"""The top of the library: the run configuration (composed of every section's own model), the list of
passes, running them, and the ``refinery`` command line. The Prefect flows build on this layer."""
