"""dials-factored: integration and scaling of X-ray diffraction data in one factored likelihood."""
