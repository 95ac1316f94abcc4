"""``python -m cnd_toolkit.docker``: exit 0 if an engine answers, 3 (with the reason) if not."""

import sys

from cnd_toolkit.docker.engine import main

sys.exit(main())
