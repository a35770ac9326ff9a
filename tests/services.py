"""Real services on loopback for integration tests: a private PostgreSQL cluster (Debian's
package, installed when missing), and server processes with bounded waits and clean shutdown.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PG_USER = "kerasops-postgres"  # initdb refuses to run as root: the cluster gets its own user
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    """The PostgreSQL server binaries, installing Debian's `postgresql` package when missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed: run `apt-get install postgresql`")
        conf = Path("/etc/postgresql-common/createcluster.conf")
        conf.parent.mkdir(parents=True, exist_ok=True)
        if not conf.exists():
            conf.write_text("create_main_cluster = false\n")  # no system cluster on :5432
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=APT_ENV, timeout=300)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]
        subprocess.run(install, check=True, env=APT_ENV, timeout=600)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def as_cluster_user(command: Sequence[str]) -> list[str]:
    """`command` run as the cluster's owner: PG_USER under root, else the current user."""
    if os.geteuid() != 0:
        return list(command)
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        add = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER]
        subprocess.run(add, check=True, timeout=30)
    return ["runuser", "-u", PG_USER, "--", *command]


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields `postgresql://postgres@host:port`."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="kerasops-pg-"))
    if os.geteuid() == 0:
        as_cluster_user(["true"])  # creates the user when missing
        shutil.chown(root, user=PG_USER)
    data, port = root / "data", free_port()
    run = {"check": True, "timeout": 120, "capture_output": True}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(as_cluster_user([*initdb, "-E", "UTF8", "--no-sync"]), **run)
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log")]
    subprocess.run(as_cluster_user([*pg_ctl, "-o", options, "-w", "-t", "60", "start"]), **run)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        stop = [*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"]
        subprocess.run(as_cluster_user(stop), timeout=60, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database `name` in the cluster at `url`; return its URL."""
    psql = str(postgres_bin() / "psql")
    subprocess.run([psql, url + "/postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    return f"{url}/{name}"


def query(url: str, sql: str) -> list[list[str]]:
    """Rows of `sql` run with psql against database `url` (cells as text)."""
    psql = str(postgres_bin() / "psql")
    done = subprocess.run(
        [psql, url, "-AtF", "\t", "-c", sql], check=True, capture_output=True, text=True
    )
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until `url` answers 200, the process exits, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited ({process.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}: no answer in {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def server(
    command: Sequence[str], health: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run a server process (its own process group) until the block ends; wait for `health`."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            list(command), env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_http(health, process, log)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within `grace` seconds."""
    for signal, wait in ((15, grace), (9, 10)):
        try:
            os.killpg(process.pid, signal)  # the server and any workers it forked
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
