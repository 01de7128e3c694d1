"""neighbourgrid: the ``ngrid`` command that ties the parts together."""

__version__ = "0.1.0"
