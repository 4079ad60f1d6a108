"""Parameterisations of the factored model: scale chain, profile width, partiality."""
