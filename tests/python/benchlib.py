"""Shared helpers of the `make bench-*` scripts: run a command while sampling the resident memory
of its whole process tree (so a multiprocessing reference is measured fairly)."""

import os
import subprocess
import sys
import threading
import time


def tree_rss_bytes(root_pid, anonymous_only=False):
    """Resident memory of a process and all its descendants; with `anonymous_only`, only the
    anonymous part (RssAnon: heap and stacks, not memory-mapped files, which stay page cache)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            if anonymous_only:
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("RssAnon:"):
                            total += int(line.split()[1]) * 1024
            else:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def run_measured(command, anonymous=None):
    """Runs a command; returns (seconds, peak tree RSS in bytes). If `anonymous` is a list, the
    peak anonymous RSS is appended to it."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(process.pid))
            peak[1] = max(peak[1], tree_rss_bytes(process.pid, anonymous_only=True))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{stderr}")
    if anonymous is not None:
        anonymous.append(peak[1])
    return elapsed, peak[0]
