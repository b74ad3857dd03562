"""The experiment scripts, importable as ``experiments.<name>`` so sweep workers can run them.

Each script defines a top-level ``run_point(params) -> dict`` that a
:mod:`clustersim.sweep` function sweep calls as ``experiments.<name>:run_point``;
``experiments._points`` holds the shared plumbing. See ``experiments/README.md``.
"""
