"""dials-factored: joint integration and scaling by a factored likelihood, as a DIALS plugin.

DIALS itself comes from Debian (it is not on PyPI), so it is not declared as a
dependency here; scripts/install.sh installs it.
"""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="dials-factored",
    version="0.1.0",
    description="Factored-likelihood integration and scaling for DIALS (stills and rotation)",
    packages=find_packages(include=["dials_factored", "dials_factored.*"]),
    python_requires=">=3.9",
    # The test and benchmark harness (harness/, benchmarks/) also needs psutil (Debian
    # python3-psutil comes with DIALS); the installed commands do not.
    extras_require={"test": ["pytest", "ruff", "hypothesis", "psutil"]},
    entry_points={
        "console_scripts": [
            "dials.factored_integrate=dials_factored.command_line.factored_integrate:run",
            "dials.factored_simulate=dials_factored.command_line.factored_simulate:run",
            "dials.factored_xia2_ssx=dials_factored.command_line.factored_xia2_ssx:run",
        ],
    },
)
