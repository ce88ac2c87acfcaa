"""The registered generator's model card states the memorisation audit's result."""

from __future__ import annotations

import pytest

from ganaug.tracking.registry import memorisation_note


@pytest.mark.parametrize("final, expected", [
    ({"memorisation_pixel_copy_rate": 0.0, "memorisation_domain_copy_rate": 0.0125, "fd_domain": 3.0},
     "copy rate 0 in pixel space, 0.0125 in domain space (tags metric.memorisation_*"),
    ({"memorisation_pixel_copy_rate": 0.5}, "copy rate 0.5 in pixel space (tags"),
    ({"fd_domain": 3.0}, "Memorisation not audited: no final quality evaluation was recorded."),
    ({}, "Memorisation not audited"),
])
def test_memorisation_note_reports_the_audited_copy_rates(final, expected):
    note = memorisation_note(final)
    assert expected in note and "not yet audited" not in note
