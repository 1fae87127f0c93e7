"""Detectors behind one interface. Adding one is one new module here, named after the
detector, that subclasses `Detector` and decorates it with `@register`. A detector's module is
imported only when the detector is used (see base.REGISTRY): ecdf_tail never loads torch."""
from pipelines.detectors.base import REGISTRY, Detector, Reason, get_detector_class, make_detector

__all__ = ["REGISTRY", "Detector", "Reason", "get_detector_class", "make_detector"]
