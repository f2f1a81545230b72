"""Run by the fork server in tests/unit/test_fork_server_wire.py: reports what the
forked child got (arguments, working directory, a variable, ignored signals), then
exits with the code given or by the signal given."""

from __future__ import annotations

import json
import os
import signal
import sys

if __name__ == "__main__":
    ignored = [
        s.name for s in (signal.SIGUSR1, signal.SIGUSR2) if signal.getsignal(s) == signal.SIG_IGN
    ]
    print(
        json.dumps(
            {
                "argv": sys.argv[1:],
                "cwd": os.getcwd(),
                "value": os.environ.get("FS_VALUE"),
                "ignored": ignored,
                "sid": os.getsid(0) == os.getpid(),
            }
        )
    )
    sys.stdout.flush()
    how = sys.argv[1]
    if how.startswith("signal:"):
        os.kill(os.getpid(), getattr(signal, how.split(":")[1]))
    sys.exit(int(how))
