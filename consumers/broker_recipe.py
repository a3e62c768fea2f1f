"""The Kafka broker recipe for development and tests: jars from Maven Central, server.properties, SCRAM.

Everything :class:`consumers.devbroker.DevBroker` needs before it starts a process, and nothing that
needs one: the broker's jars are collected once with ``mvn dependency:copy-dependencies`` on
``deploy/kafka/pom.xml`` into ``${XDG_CACHE_HOME:-~/.cache}/interest-stream/kafka-<version>/lib``
(:func:`ensure_jars`, checked against the pom's digest); ``deploy/kafka/server.properties.template``
is rendered with the node's listeners (:func:`broker_properties`, :func:`render_server_properties`);
SCRAM listeners and the ``StorageTool format --add-scram`` arguments come from
:func:`scram_properties` and :func:`scram_format_args`.

>>> props = broker_properties(Path("/tmp/d/kraft"), broker_port=9092, controller_port=9093)
>>> props["listeners"]
'PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093'
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import socket
import string
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
POM = DEPLOY_DIR / "pom.xml"
TEMPLATE = DEPLOY_DIR / "server.properties.template"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.xml"

HOST = "127.0.0.1"
NODE_ID = 1
MARKER = ".complete"


class BrokerError(RuntimeError):
    """The development broker could not be prepared, started or stopped."""



def cache_home() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/interest-stream``: jar caches, shared by every checkout."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interest-stream"



def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in the pom (its ``<kafka.version>`` property)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if not match:
        raise BrokerError(f"no <kafka.version> property in {pom}")
    return match.group(1)


# ---------------------------------------------------------------------------------------------- jars


def ensure_jars(pom: Path = POM, cache_root: Path | None = None, *, quiet: bool = True) -> Path:
    """Return the directory holding the broker's jars, running Maven first unless they are cached.

    The cache (``<cache_root>/kafka-<version>/lib``) is valid when its marker file holds the sha256 of
    the pom. A file lock keeps concurrent first runs from downloading into the same place; the jars
    are copied into a fresh directory and renamed into place, so a half-done copy is never used.
    """
    version = kafka_version(pom)
    root = (cache_root or cache_home()) / f"kafka-{version}"
    lib = root / "lib"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _cache_valid(lib, digest):
        return lib
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka broker jars; install it")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cache_valid(lib, digest):
            return lib
        staging = Path(tempfile.mkdtemp(prefix="lib.", dir=root))
        cmd = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        if quiet:
            cmd.insert(1, "-q")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")
        (staging / MARKER).write_text(digest + "\n")
        if lib.exists():
            shutil.rmtree(lib)
        staging.rename(lib)
    return lib


def _cache_valid(lib: Path, digest: str) -> bool:
    marker = lib / MARKER
    return marker.is_file() and marker.read_text().strip() == digest and any(lib.glob("kafka_2.13-*.jar"))


# ------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class Listener:
    """One broker listener: ``NAME://host:port`` speaking ``protocol`` (PLAINTEXT, SASL_PLAINTEXT, ...)."""

    name: str
    port: int
    protocol: str = "PLAINTEXT"
    host: str = HOST
    advertised: bool = True

    @property
    def url(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def free_port(host: str = HOST, exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it), not in ``exclude``.

    >>> a = free_port(); b = free_port(exclude={a})
    >>> a != b and 1024 <= a < 65536
    True
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port


def broker_properties(log_dir: Path, *, broker_port: int, controller_port: int,
                      extra_listeners: tuple[Listener, ...] = (), num_partitions: int = 3,
                      internal_topic_partitions: int = 8, node_id: int = NODE_ID) -> dict[str, str]:
    """The template's substitutions for a one-node KRaft broker; add listeners with ``extra_listeners``."""
    listeners = (Listener("PLAINTEXT", broker_port), Listener("CONTROLLER", controller_port, advertised=False),
                 *extra_listeners)
    names = [lst.name for lst in listeners]
    if len(set(names)) != len(names) or len({lst.port for lst in listeners}) != len(listeners):
        raise BrokerError(f"listener names and ports must be distinct: {listeners}")
    return {
        "node_id": str(node_id),
        "controller_quorum_voters": f"{node_id}@{HOST}:{controller_port}",
        "listeners": ",".join(lst.url for lst in listeners),
        "advertised_listeners": ",".join(lst.url for lst in listeners if lst.advertised),
        "listener_security_protocol_map": ",".join(f"{lst.name}:{lst.protocol}" for lst in listeners),
        "log_dirs": str(log_dir),
        "num_partitions": str(num_partitions),
        "internal_topic_partitions": str(internal_topic_partitions),
    }


def render_server_properties(values: Mapping[str, str], extra: Mapping[str, str] | None = None,
                             template: Path = TEMPLATE) -> str:
    """Fill the template; then each ``extra`` key replaces its line, or is appended if the template lacks it.

    >>> v = broker_properties(Path("/d"), broker_port=1111, controller_port=2222)
    >>> text = render_server_properties(v, {"num.io.threads": "8", "sasl.enabled.mechanisms": "SCRAM-SHA-256"})
    >>> [ln for ln in text.splitlines() if ln.startswith(("num.io", "sasl", "controller.quorum"))]
    ['controller.quorum.voters=1@127.0.0.1:2222', 'num.io.threads=8', 'sasl.enabled.mechanisms=SCRAM-SHA-256']
    """
    text = string.Template(template.read_text()).substitute(values)
    extra = dict(extra or {})
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in extra:
            line = f"{key}={extra.pop(key)}"
        lines.append(line)
    if extra:
        lines += ["", "# extra", *(f"{k}={v}" for k, v in extra.items())]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A KRaft cluster id as ``kafka-storage random-uuid`` makes it: URL-safe base64 of a random UUID.

    >>> cid = new_cluster_id(); len(cid), cid[0] != "-"
    (22, True)
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids these too: they look like command-line flags
            return cid


SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SASL_LISTENER = "SASL_PLAINTEXT"
SASL_SSL_LISTENER = "SASL_SSL"
_SCRAM_SAFE = re.compile(r"[A-Za-z0-9._@+\-]+")  # what --add-scram parses without quoting trouble


def scram_properties(mechanisms: tuple[str, ...] = SCRAM_MECHANISMS, *,
                     listener_names: tuple[str, ...] = (SASL_LISTENER,)) -> dict[str, str]:
    """Broker properties that make ``listener_names`` authenticate clients with SCRAM ``mechanisms``.

    The broker side of SCRAM needs a JAAS entry per listener and mechanism, but no credentials in
    it: the inter-broker listener stays PLAINTEXT, and the users live in the KRaft metadata.
    """
    for mech in mechanisms:
        if mech not in SCRAM_MECHANISMS:
            raise BrokerError(f"unsupported SCRAM mechanism {mech!r}; use one of {SCRAM_MECHANISMS}")
    props = {"sasl.enabled.mechanisms": ",".join(mechanisms)}
    for name in listener_names:
        for mech in mechanisms:
            props[f"listener.name.{name.lower()}.{mech.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
    return props


def scram_format_args(users: Mapping[str, str], mechanisms: tuple[str, ...] = SCRAM_MECHANISMS) -> list[str]:
    """``StorageTool format`` arguments that create each user's credential for every mechanism."""
    args: list[str] = []
    for name, password in users.items():
        if not _SCRAM_SAFE.fullmatch(name) or not _SCRAM_SAFE.fullmatch(password):
            raise BrokerError(f"SCRAM user names and passwords for the dev broker must match {_SCRAM_SAFE.pattern}"
                              f" (got user {name!r}); add others with DevBroker.add_scram_user")
        for mech in mechanisms:
            args += ["--add-scram", f"{mech}=[name={name},password={password}]"]
    return args


# ------------------------------------------------------------------------------------------- broker


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
