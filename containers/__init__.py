"""The servers' config templates, one folder per service, installed as ``labkit.containers``.

pyproject.toml maps this directory to the package ``labkit.containers`` so that a wheel
carries the templates; read them through ``labkit.services.templates``, never by a path.
"""
