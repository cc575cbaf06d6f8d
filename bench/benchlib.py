"""What the benchmark scripts in bench/ (compare, callgrind, fanout) share: a free
loopback port, waiting for a server to listen on it, and stopping it by its PID.

Imported from the scripts' own directory (Python puts a script's directory first on
its path), so the scripts stay runnable as they are, from anywhere.
"""

import socket
import subprocess
import time


def free_port():
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, tries=400):
    """Until something accepts on 127.0.0.1:`port` (25 ms between tries); raises if
    `proc` exits first or nothing listens after `tries`."""
    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc):
    """SIGTERM, then SIGKILL after 5 s; waits for the exit."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
