"""Who used the machine's cores during a load: the service's workers, the database's processes,
the load generator (wrk, a child of the bench) and everything else (short-lived processes such as
autovacuum workers, the kernel's own threads), plus how much was idle and how much the host took
(steal: on a shared virtual machine, time our cores ran someone else).

For a closed-loop load (wrk at 64 connections) on 2 shared cores, a speed-up needs either less
CPU per request from one of these, or less idle time: this tells which. Read from /proc, before
and after the load; CPU per request = CPU seconds / requests answered.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: str) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _machine() -> tuple[float, float, float]:
    """(busy, idle, stolen) CPU seconds of the whole machine since boot. Stolen: time the
    hypervisor ran someone else on our cores (a shared machine's noise, not our work)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = parts[0] + parts[1] + parts[2] + parts[5] + parts[6]  # user nice system irq softirq
    idle = parts[3] + parts[4]  # idle + iowait
    return busy / _TICK, idle / _TICK, parts[7] / _TICK


@dataclass
class Snapshot:
    workers: float
    database: float | dict[str, float]  # CPU seconds, or per postgres pid (see snapshot)
    loadgen: float
    busy: float
    idle: float
    stolen: float


def snapshot(server_pid: int) -> Snapshot:
    """CPU seconds so far. Database: every process named postgres, by pid (one that ends before
    the second snapshot, such as an autovacuum worker, drops out rather than counting negative;
    one that starts counts whole). Load generator: this process's finished children (wrk runs to
    completion inside the measured span)."""
    workers = sum(_proc_cpu_s(c) for c in _children(server_pid))
    database = {p: _proc_cpu_s(p) for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "postgres"}
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, idle, stolen = _machine()
    return Snapshot(workers, database, ru.ru_utime + ru.ru_stime, busy, idle, stolen)


def _database_delta(before: float | dict[str, float], after: float | dict[str, float]) -> float:
    if isinstance(before, dict) and isinstance(after, dict):
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    total = lambda v: sum(v.values()) if isinstance(v, dict) else v  # noqa: E731
    return total(after) - total(before)


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """Microseconds of CPU per request for each part, and the idle share of the machine."""
    n = max(1, requests)
    d = {k: getattr(after, k) - getattr(before, k) for k in ("workers", "loadgen", "busy", "idle", "stolen")}
    d["database"] = _database_delta(before.database, after.database)
    out = {k: d[k] / n * 1e6 for k in ("workers", "database", "loadgen")}
    out["other"] = max(0.0, d["busy"] / n * 1e6 - sum(out.values()))
    total = d["busy"] + d["idle"] + d["stolen"]
    out["idle_share"] = d["idle"] / total if total > 0 else float("nan")
    out["stolen_share"] = d["stolen"] / total if total > 0 else float("nan")
    return out


def line(split: dict[str, float] | None) -> str:
    if not split:
        return "n/a"
    return (f"workers {split['workers']:.0f} us, database {split['database']:.0f} us, "
            f"wrk {split['loadgen']:.0f} us, other {split['other']:.0f} us per request; "
            f"machine idle {split['idle_share'] * 100:.0f}%, stolen by the host "
            f"{split['stolen_share'] * 100:.0f}%")


def budget(service: dict[str, float], floor: dict[str, float], target: float) -> dict[str, float]:
    """What a ratio target (service rate >= target x floor rate, on the same cores) allows per
    request, from the CPU both loads used per request.

    At full use of the same cores, rates go inversely with the CPU per request, so the target
    allows the floor's whole CPU per request (workers, database, wrk, other) divided by the
    target. `ceiling` is the ratio the service would reach if its database cost nothing: the
    floor's CPU per request over the service's workers' and wrk's alone."""
    def total(s: dict[str, float]) -> float:
        return s["workers"] + s["database"] + s["loadgen"] + s["other"]
    allowed = total(floor) / target
    used = service["workers"] + service["database"] + service["loadgen"]
    return {"allowed": allowed, "used": used,
            "ceiling": total(floor) / max(1e-9, service["workers"] + service["loadgen"])}


def budget_line(service: dict[str, float] | None, floor: dict[str, float] | None, target: float) -> str:
    if not service or not floor:
        return "n/a"
    b = budget(service, floor, target)
    return (f"{target} of the floor allows {b['allowed']:.0f} us of CPU per request (workers + database + wrk);"
            f" (c) used {b['used']:.0f} us. With a database that cost nothing, (c)'s workers would reach"
            f" c/floor {b['ceiling']:.2f}")
