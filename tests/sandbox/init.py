"""Process 1 of a sandbox host's pid namespace: reaps orphans until it is told to stop.

When it exits, the kernel kills every other process of the host, so stopping a host is one kill.
"""

import os
import signal
import sys
import time


def _stop(_signum, _frame):
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)
signal.signal(signal.SIGHUP, _stop)

while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
    except InterruptedError:
        pass
