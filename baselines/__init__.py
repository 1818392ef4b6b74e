"""Baseline training methods, each a :class:`ebm.method.Method`; see :mod:`baselines.registry`."""
