"""Image loading and alignment, scoring, calibration, batch runs and forensic reports."""
