"""Register the console scripts when this package sits in a cctbx/libtbx modules/ tree."""

from __future__ import annotations

import libtbx.pkg_utils

libtbx.pkg_utils.define_entry_points(
    {
        "console_scripts": [
            "dials.factored_integrate=dials_factored.command_line.factored_integrate:run",
            "dials.factored_simulate=dials_factored.command_line.factored_simulate:run",
            "dials.factored_xia2_ssx=dials_factored.command_line.factored_xia2_ssx:run",
        ]
    }
)
