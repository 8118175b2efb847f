"""Versions that the core and the Pants backend must agree on, in one Pants-free leaf module.

The backend pins the tool PEX's pex requirement with it; the core writes it into every lock as
the pex whose lock schema (and pip) the lock is for. Neither side imports the other: both import
this module, which imports nothing.
"""

PEX_VERSION = "2.100.7"
# The pip that pex `PEX_VERSION` calls "latest", which Pants' `[python].pip_version = "latest"` uses.
PEX_PIP_VERSION = "26.2.1"
