"""A real single-node SLURM cluster for the tests (Debian's slurmctld + slurmd + munge on loopback).

Installed with apt when missing, configured in /etc/slurm (job steps started inside a job only find the
configuration there; a configuration found there before is put back afterwards, unless a killed run of this
fixture left it), with its state in a private folder, started by hand (there is no systemd) and stopped by
the PIDs the daemons write.
The node offers two fake GPUs (gres File=/dev/null and /dev/zero): a job that asks for one runs with
CUDA_VISIBLE_DEVICES=0 or 1, and two such jobs run at once (sharded stages' shards side by side).
See ../shared/SLURM.md for the facts this rests on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import debian
import psutil

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
BINARIES = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"]

CONF = """ClusterName=atsgci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
GresTypes=gpu
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
GRES = "NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n"


def unavailable() -> str | None:
    """Why this machine cannot run the cluster (None when it can)."""
    if os.geteuid() != 0:
        return "starting SLURM's daemons needs root"
    if not all(Path(b).exists() for b in BINARIES) and debian.can_install():
        return f"SLURM is not installed and {debian.can_install()}"
    return None


def install() -> None:
    if not all(Path(b).exists() for b in BINARIES):
        debian.install(*PACKAGES)


class Cluster:
    """``with Cluster(folder) as env:`` -> the environment for sbatch, squeue and snakemake."""

    def __init__(self, folder: Path, ctld_port: int = 6917, d_port: int = 6918):
        self.state = Path(folder)
        self.conf = Path("/etc/slurm/slurm.conf")
        self.saved: dict[Path, bytes] = {}
        self.ports = ctld_port, d_port
        self.started_munge = False

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def __enter__(self) -> dict:
        install()
        for sub in ("ctld", "d", "log"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        memory = int(psutil.virtual_memory().total / 2**20 * 0.8)
        gres = self.conf.with_name("gres.conf")
        # A configuration of this test cluster left by a killed run is not put back: it names a controller that
        # no longer runs, and every SLURM query (Snakemake's SLURM plugin makes some at import) then waits ~9 s.
        leftover = self.conf.exists() and self.conf.read_text().startswith(CONF.split("\n", 1)[0])
        for path in (self.conf, gres):
            if path.exists() and not leftover:
                self.saved[path] = path.read_bytes()
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            CONF.format(
                state=self.state, cpus=os.cpu_count(), memory=memory, ctld_port=self.ports[0], d_port=self.ports[1]
            )
        )
        gres.write_text(GRES)
        subprocess.run(["chown", "-R", "slurm:slurm", str(self.state)], check=True)
        self.state.chmod(0o755)
        for parent in self.state.parents:  # slurmctld runs as user slurm and must reach its state folder
            if parent != Path("/") and not parent.stat().st_mode & 0o001:
                parent.chmod(parent.stat().st_mode | 0o011)
        self._start_munge()
        env = self.env
        subprocess.run(["/usr/sbin/slurmctld"], env=env, check=True, capture_output=True, timeout=60)
        subprocess.run(["/usr/sbin/slurmd", "-N", "localhost"], env=env, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
            if state == "idle":
                return env
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the SLURM node did not become idle (state {state!r}); logs in {self.state / 'log'}")

    def _start_munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "munge:munge", "/run/munge"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True)
        self.started_munge = True

    def __exit__(self, *exc) -> None:
        pids = [self.state / "slurmd.pid", self.state / "slurmctld.pid"]
        if self.started_munge:
            pids.append(Path("/run/munge/munged.pid"))
        for pid_file in pids:
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        for path in (self.conf, self.conf.with_name("gres.conf")):
            if path in self.saved:
                path.write_bytes(self.saved[path])
            else:
                path.unlink(missing_ok=True)
