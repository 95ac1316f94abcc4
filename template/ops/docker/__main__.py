"""``python -m ops.docker``: exit 0 if an engine answers, 3 (with the reason) if not."""

import sys

from ops.docker.engine import main

sys.exit(main())
