"""The Docker engine through the Docker SDK (no shell strings): :mod:`~ops.docker.engine` connects,
:mod:`~ops.docker.images` builds, pushes and cleans, :mod:`~ops.docker.containers` runs and
health-gates. ``python -m ops.docker`` exits 0 when an engine answers.
"""
