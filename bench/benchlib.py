"""What the benchmark scripts in bench/ (compare, callgrind, fanout, topics) share: a
free loopback port, waiting for a server to listen on it, stopping it by its PID,
counting a process's events with perf, and the figures' formats.

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


def perf_counts(pid, seconds, events):
    """Count `events` (perf event names, e.g. tracepoints) of `pid`'s threads for
    `seconds`; {event: count}, with None for an event perf could not count."""
    cmd = ["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid),
           "--", "sleep", str(seconds)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    counts = dict.fromkeys(events)
    for line in res.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in counts and fields[0].isdigit():
            counts[fields[2]] = int(fields[0])
    return counts


def fmt_rate(x):
    """A rate: 1.23 M, 456 k."""
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def fmt_us(us):
    """A duration given in microseconds: 1.23 s, 4.5 ms, 67 µs."""
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} µs"
