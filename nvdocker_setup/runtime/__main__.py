"""Entry point: ``python3 -m nvdocker_setup.runtime`` or, from the C launcher, ``python3 -I -S
<this file>`` (isolated, no site: faster, and immune to PYTHON* variables in dockerd's env)."""

import os
import sys

if not __package__:  # run by path: make the package importable from where this file lives
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nvdocker_setup.runtime.main import main  # noqa: E402

sys.exit(main())
