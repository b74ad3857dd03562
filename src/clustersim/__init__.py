"""clustersim: a discrete-event simulator of GPU/NPU clusters.

The package replays job and request traces on modelled hardware under pluggable
schedulers. Public entry points: :func:`clustersim.config.load_scenario`,
:func:`clustersim.engine.simulate` and the ``clustersim`` command line.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
