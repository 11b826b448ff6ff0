"""Examples shipped with the package (used by ``taskflow-exclusive demo``)."""
