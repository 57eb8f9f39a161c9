"""The folder ``python -m tracedpolicy run`` puts first on ``PYTHONPATH``: its sitecustomize."""
