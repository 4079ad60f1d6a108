"""The per-reflection statistics of the factored likelihood and their residuals."""
