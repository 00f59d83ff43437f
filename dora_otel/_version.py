"""The package version: the one place it is written (pyproject.toml reads it through hatch's
`[tool.hatch.version]`; `dora-otel --version`, STARTUP lines and `dora_otel.__version__` read it here)."""

__version__ = "0.1.0"
