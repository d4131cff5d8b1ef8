"""A real single-node SLURM cluster for tests: Debian's munged, slurmctld and slurmd, started as
root in the foreground with every file (key, sockets, state, spool, logs) in one temp folder.

Nothing is read from or written to /etc/slurm, /etc/munge or /run: the client commands (sbatch,
squeue, scontrol, which submitit calls) find this cluster through `SLURM_CONF` (see `env()`), and
slurm reaches this munged through `AuthInfo=socket=...`. Ports are free ones picked at start, so
two test sessions on one machine do not meet. No accounting daemon: `sacct` fails, which submitit
tolerates (it reads a job's result file; it warns "Bypassing sacct error").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
PARTITION = "debug"


def missing() -> str | None:
    """Why a cluster cannot start here (None when it can): not root, or binaries missing."""
    if os.geteuid() != 0:
        return "a SLURM test cluster starts munged/slurmctld/slurmd as root; not root here"
    absent = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b, path=_path()) is None]
    if absent:
        return (
            f"{', '.join(absent)} not installed; install Debian's packages as root: "
            "`apt-get install -y slurmctld slurmd munge` (.ci/run does)"
        )
    return None


def _path() -> str:
    """PATH plus the sbin folders the daemons live in (not on a plain user's PATH)."""
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    """This machine's memory in MB (the node's RealMemory, so `--mem` requests fit)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


class SlurmCluster:
    """One controller and one compute node (this machine, `cpus` CPUs) in partition `debug`.

    `start()` returns once the node is idle; `stop()` cancels what is left and ends the daemons
    (SIGTERM, then SIGKILL); the folder keeps the logs (`logs()` returns their tails).
    """

    def __init__(self, root: Path, cpus: int = 2):
        self.root = Path(root)
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, base: dict | None = None) -> dict:
        """Environment for client commands (and jobs submitted from it) to use this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = _path()
        return env

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> str:
        """A client command (`squeue`, `scontrol show job 3`, ...) against this cluster."""
        out = subprocess.run(
            cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}\n{self.logs()}"
            )
        return out.stdout

    def job_state(self, job: str) -> str:
        """`COMPLETED`, `RUNNING`, ... of a job (`3`, or an array task `2_1`), from scontrol."""
        show = self.run("scontrol", "show", "job", job)
        return show.split("JobState=", 1)[1].split()[0]

    def wait_done(self, job: str, timeout: float = 60) -> str:
        """The state a job ends in, once it has ended (a job's process can outlive the result
        file submitit waits for by a few seconds: W&B and interpreter shutdown)."""
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
        self._wait(lambda: self.job_state(job) in ended, timeout, f"job {job} to end")
        return self.job_state(job)

    # -- start -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            self._start_munge(timeout)
            self._write_conf()
            for name in ("slurmctld", "slurmd"):
                self._spawn(name, self._daemon_cmd(name))
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "logs" / f"{name}.out", "ab")  # noqa: SIM115 (the daemon's)
        with log:
            self.procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
            )

    def _start_munge(self, timeout: float) -> None:
        mdir = self.munge_socket.parent
        for d in (mdir, self.root / "logs", self.root / "state", self.root / "spool"):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cmd = [
            shutil.which("munged", path=_path()) or "munged",
            "--foreground",
            "--force",  # as root, in a temp folder: fine for a test cluster
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={mdir / 'munged.pid'}",
            f"--seed-file={mdir / 'munged.seed'}",
            f"--log-file={self.root / 'logs' / 'munged.log'}",
        ]
        self._spawn("munged", cmd)
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged to open its socket")

    def _write_conf(self) -> None:
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=liveml-test",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'logs' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'logs' / 'slurmd.log'}",
                    # No cgroups, systemd or accounting daemon in a container: plain processes.
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "ReturnToService=2",
                    # The node's CPUs/memory are what this file says, whatever the machine has.
                    "SlurmdParameters=config_overrides",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=30",
                    "InactiveLimit=0",
                    "KillWait=5",
                    "MinJobAge=600",  # finished jobs stay visible to `scontrol show job`
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={_mem_mb()} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _daemon_cmd(self, name: str) -> list[str]:
        exe = shutil.which(name, path=_path()) or name
        if name == "slurmctld":
            # -c: no state to recover; -i: ignore a stale state file rather than refuse.
            return [exe, "-D", "-c", "-i", "-f", str(self.conf)]
        return [exe, "-D", "-f", str(self.conf), "-N", self.node]

    def _wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) on start\n{self.logs()}")
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
            return out.strip() == "idle"

        self._wait(idle, timeout, f"node {self.node} to come up idle")

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > end:
                waited = f"timed out after {timeout:.0f} s waiting for {what}"
                raise TimeoutError(f"{waited}\n{self.logs()}")
            time.sleep(0.2)

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged; never raises."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--user", "root", check=False, timeout=10)
                self._wait(lambda: not self.run("squeue", "-h", check=False, timeout=10), 20, "")
            except Exception:  # teardown goes on whatever the jobs do
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)

    def logs(self, chars: int = 3000) -> str:
        """The tail of each daemon's log (for a failing test's message)."""
        parts = []
        for f in sorted((self.root / "logs").glob("*")):
            text = f.read_text(errors="replace")
            parts.append(f"--- {f.name} ---\n{text[-chars:]}")
        return "\n".join(parts)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
