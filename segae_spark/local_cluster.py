"""A Spark standalone cluster on 127.0.0.1, started from the pyspark wheel.

``local[*]`` runs every task inside the driver's JVM, so it cannot show what
a real cluster does when an executor dies, two applications share workers or
a driver is killed while executors hold half-written files. This starts the
real thing, a standalone master and N workers (``spark-class`` from the
installed pyspark, no separate Spark download), each worker launching its
executors as separate JVMs; the reliability tests and the soak benchmark run
their jobs against it, and it is a quick way to try a job on a "cluster" from
a laptop::

    with LocalCluster(workers=2) as cluster:
        subprocess.run(["segae-spark", "score", "--spark-conf", f"spark.master={cluster.master_url}", ...])
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pyspark.find_spark_home import _find_spark_home

logger = logging.getLogger("segae_spark")

_EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """A standalone master and ``workers`` workers, each with ``cores`` cores and ``memory`` for executors.

    Logs and the workers' work directories go under ``workdir``. Stop it with
    :meth:`stop` or use it as a context manager.
    """

    def __init__(self, workdir: str | os.PathLike, workers: int = 2, cores: int = 1, memory: str = "1536m", timeout: float = 120):
        self.workdir = Path(workdir)
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.timeout = timeout
        self.port = _free_port()
        self.ui_port = _free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self._processes: list[subprocess.Popen] = []

    def start(self) -> "LocalCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        master = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port)]
        self._launch("master", master)
        for i in range(self.workers):
            worker_dir = self.workdir / f"worker-{i}"
            worker_dir.mkdir(exist_ok=True)
            self._launch(f"worker-{i}", [
                "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(worker_dir), "--webui-port", "0",
            ])  # fmt: skip
        self._wait_for_workers()
        logger.info("standalone cluster at %s: %d workers x %d cores", self.master_url, self.workers, self.cores)
        return self

    def _launch(self, name: str, args: list[str]) -> None:
        spark_class = Path(_find_spark_home()) / "bin" / "spark-class"
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        with open(self.workdir / f"{name}.log", "wb") as log:
            # A session of its own, so stop() can kill the JVM and anything it spawned.
            process = subprocess.Popen(
                ["bash", str(spark_class), *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._processes.append(process)

    def state(self) -> dict:
        """The master's JSON status: workers, running applications, cores in use."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.load(response)

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                alive = [w for w in self.state()["workers"] if w["state"] == "ALIVE"]
                if len(alive) == self.workers:
                    return
            except OSError:
                pass  # the master's UI is not up yet
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._processes):
                self.stop()
                raise RuntimeError(f"the local standalone cluster did not start; see the logs in {self.workdir}")
            time.sleep(0.5)

    def executor_pids(self) -> list[int]:
        """Process ids of the executor JVMs the workers launched, oldest first."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue  # exited meanwhile, or not ours
            if _EXECUTOR_CLASS.encode() in cmdline and cwd.startswith(str(self.workdir.resolve())):
                pids.append(int(proc.name))
        return sorted(pids)

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
