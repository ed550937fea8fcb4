"""Entry point: ``python3 -m nvdocker_setup.hook`` or, as our createContainer hook, ``python3 -I
-S <this file>`` (isolated, no site: faster, and independent of the container's environment)."""

import os
import sys

if not __package__:  # run by path: make the package importable from where this file lives
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from nvdocker_setup.hook.main import exit_now, main  # noqa: E402

exit_now(main())
