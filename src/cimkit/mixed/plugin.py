"""Plugin of the mixed-precision concern: the ``mixed`` kind."""

from cimkit.mixed import variants  # noqa: F401  (registers the kind)
