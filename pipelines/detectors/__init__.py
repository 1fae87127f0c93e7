"""Detectors behind one interface. Adding one is one new module here that subclasses
`Detector` and decorates it with `@register`; importing this package imports them all."""
import importlib
import pkgutil

from pipelines.detectors.base import REGISTRY, Detector, get_detector_class, make_detector

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Detector", "get_detector_class", "make_detector"]
