"""`nvdocker-setup doctor`: independent checks of everything a GPU container depends on.

``checks`` is the framework (registry, results, runner), ``facts`` the shared, lazily computed view
of the host, one module per group registers the checks, and ``catalogue`` maps every known failure
mode to the check that detects it. The CLI verb only parses options and renders.
"""

from typing import Iterable, Optional


def diagnose(ctx, options=None, only: Optional[Iterable[str]] = None):
    """Run the checks (all, or those in ``only``) on the host ``ctx`` describes; a DoctorReport."""
    from nvdocker_setup.doctor.checks import run_checks
    from nvdocker_setup.doctor.facts import Facts

    return run_checks(Facts(ctx, options), only)
