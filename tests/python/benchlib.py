"""Shared helpers of the `make bench-*` scripts: run a command while sampling the resident memory
of its whole process tree (so a multiprocessing reference is measured fairly), and the benches'
synthetic BBBC021-layout fields."""

import os
import subprocess
import sys
import threading
import time


def tree_memory_bytes(root_pid):
    """(resident, anonymous resident) memory of a process and all its descendants. Anonymous
    memory (RssAnon) is heap and stacks, without memory-mapped files (which stay page cache).
    Only the process tree is visited, so sampling costs little CPU."""
    resident = anonymous = 0
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        resident += int(line.split()[1]) * 1024
                    elif line.startswith("RssAnon:"):
                        anonymous += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    stack.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return resident, anonymous


def run_measured(command, anonymous=None):
    """Runs a command; returns (seconds, peak tree RSS in bytes). If `anonymous` is a list, the
    peak anonymous RSS is appended to it."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample():
        while process.poll() is None:
            resident, anonymous_resident = tree_memory_bytes(process.pid)
            peak[0] = max(peak[0], resident)
            peak[1] = max(peak[1], anonymous_resident)
            time.sleep(0.05)

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


def run_repeated(commands, repeat, settle=2.0):
    """Runs each group of commands `repeat` times, the groups interleaved (so a slow spell of the
    machine hits both sides), and returns per group (median seconds of the group's summed
    times, the list of those sums, peak RSS, peak anonymous RSS) over all runs. A group is a
    list of commands that make one side (e.g. two stages run one after the other). Each run
    starts `settle` seconds after the previous one ended: the kernel is still reclaiming the
    previous process's memory for a moment, which slowed whichever side ran next by up to 10 %."""
    results = [([], 0, 0) for _ in commands]
    for _ in range(repeat):
        for index, group in enumerate(commands):
            seconds, peak, anonymous = 0.0, 0, []
            time.sleep(settle)
            for command in group:
                elapsed, resident = run_measured(command, anonymous)
                seconds += elapsed
                peak = max(peak, resident)
            times, old_peak, old_anonymous = results[index]
            results[index] = (times + [seconds], max(old_peak, peak), max(old_anonymous, max(anonymous)))
    return [(sorted(times)[len(times) // 2], times, peak, anonymous) for times, peak, anonymous in results]


def make_fields(folder, n_fields, seed, label="bench"):
    """`n_fields` fields of 1024x1280x3 uint16 in the BBBC021 layout under `folder` (written once by
    make_fields.py, then reused); returns the image and MoA tables' paths."""
    marker = os.path.join(folder, f".n{n_fields}-s{seed}")
    if not os.path.exists(marker):
        print(f"{label}: writing {n_fields} fields of 1024x1280x3 uint16 to {folder}", file=sys.stderr)
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "make_fields.py"), "--out", folder, "--n-fields",
                        str(n_fields), "--height", "1024", "--width", "1280", "--seed", str(seed)], check=True)
        open(marker, "w").close()
    return os.path.join(folder, "BBBC021_v1_image.csv"), os.path.join(folder, "BBBC021_v1_moa.csv")
