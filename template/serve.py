"""Start gunicorn with gunicorn.conf.py; the image's CMD. Extra arguments go to gunicorn.

gunicorn parses ``WEB_CONCURRENCY`` with a bare ``int()`` when it is imported, so a typo there
would end in a traceback. Evaluating gunicorn.conf.py first turns every bad value into a
one-line message naming the variable. gunicorn then runs in this same process (PID 1 in the
container), so SIGTERM reaches it directly.
"""

import runpy
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().with_name("gunicorn.conf.py")

if __name__ == "__main__":
    runpy.run_path(str(CONFIG))
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", "--config", str(CONFIG), *sys.argv[1:]]
    run()
