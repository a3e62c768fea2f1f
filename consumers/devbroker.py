"""A real Apache Kafka broker for development and tests: KRaft, one node, jars from Maven Central.

:class:`DevBroker` collects the broker's jars once (``mvn dependency:copy-dependencies`` on
``deploy/kafka/pom.xml`` into ``${XDG_CACHE_HOME:-~/.cache}/interest-stream/kafka-<version>/lib``),
renders ``deploy/kafka/server.properties.template`` with two free ports on 127.0.0.1 (PLAINTEXT for
clients, CONTROLLER for KRaft), formats the storage and runs ``java -cp '<lib>/*' kafka.Kafka`` in its
own process group. It is ready when a metadata request succeeds; it stops with SIGTERM (SIGKILL after
a grace period) and removes its data directory unless asked to keep it. :meth:`DevBroker.restart`
brings it back on the same ports and data, for fault tests.

``scram_users={"alice": "alice-secret"}`` adds a ``SASL_PLAINTEXT`` listener on a free port
(:attr:`DevBroker.sasl_bootstrap_servers`) that authenticates with SCRAM-SHA-512 and SCRAM-SHA-256;
the users' credentials are written into the KRaft metadata when the storage is formatted
(``StorageTool format --add-scram``), and :meth:`DevBroker.add_scram_user` adds more later through the
admin client. ``ssl=True`` adds a ``SASL_SSL`` listener too (:attr:`DevBroker.sasl_ssl_bootstrap_servers`),
with a self-signed certificate made by ``keytool`` in the data directory (:attr:`DevBroker.ssl_cafile`,
PEM, for ``ssl_cafile``). PLAINTEXT stays the inter-broker listener and CONTROLLER the KRaft one.

Example (needs Java 17+ and Maven; not run as a doctest)::

    with DevBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        ...
        broker.restart()          # same ports, same data

Rendering the configuration needs neither Java nor Kafka:

    >>> props = broker_properties(Path("/tmp/d/kraft"), broker_port=9092, controller_port=9093)
    >>> props["listeners"]
    'PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093'
    >>> "process.roles=broker,controller" in render_server_properties(props)
    True
    >>> scram = scram_properties(("SCRAM-SHA-512",), listener_names=("SASL_PLAINTEXT",))
    >>> scram["sasl.enabled.mechanisms"], sorted(scram)[0]
    ('SCRAM-SHA-512', 'listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config')
    >>> scram_format_args({"alice": "s3cret"}, ("SCRAM-SHA-512",))
    ['--add-scram', 'SCRAM-SHA-512=[name=alice,password=s3cret]']
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumers.broker_recipe import (  # noqa: F401 - re-exported: the recipe's names are the broker's API too
    DEPLOY_DIR,
    HOST,
    LOG4J_CONFIG,
    MARKER,
    NODE_ID,
    POM,
    SASL_LISTENER,
    SASL_SSL_LISTENER,
    SCRAM_MECHANISMS,
    TEMPLATE,
    BrokerError,
    Listener,
    _tail,
    broker_properties,
    cache_home,
    ensure_jars,
    free_port,
    kafka_version,
    new_cluster_id,
    render_server_properties,
    scram_format_args,
    scram_properties,
)
from consumers.kafka_config import resolve_bootstrap

DEFAULT_JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
PR_SET_PDEATHSIG = 1

# --------------------------------------------------------------------------------------------- paths


def state_home() -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/interest-stream``: the CLI broker's state and data."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "interest-stream"


def state_file() -> Path:
    """Where ``interest-stream broker start`` records the broker it started (JSON)."""
    return state_home() / "broker.json"


class DevBroker:
    """One KRaft broker+controller JVM on 127.0.0.1, with its own data directory.

    ``data_dir`` defaults to a new temporary directory. Ports default to free ones chosen at the first
    :meth:`start` and are kept for :meth:`restart`. ``detach=True`` (the CLI) lets the JVM outlive this
    Python process; otherwise it is stopped when this process exits, even if it is killed.

    ``scram_users`` (name -> password) adds a SASL_PLAINTEXT listener authenticating with
    ``scram_mechanisms`` (:attr:`sasl_bootstrap_servers`); ``ssl=True`` adds a SASL_SSL one as well
    (:attr:`sasl_ssl_bootstrap_servers`, CA certificate :attr:`ssl_cafile`). :meth:`client_options`
    gives the matching kafka-python settings.
    """

    def __init__(self, data_dir: Path | str | None = None, *, broker_port: int = 0, controller_port: int = 0,
                 extra_listeners: tuple[Listener, ...] = (), extra_properties: Mapping[str, str] | None = None,
                 jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS, startup_timeout: float = 90.0,
                 keep_data: bool = False, detach: bool = False, pom: Path = POM,
                 cache_root: Path | None = None, java: str | None = None,
                 scram_users: Mapping[str, str] | None = None,
                 scram_mechanisms: tuple[str, ...] = SCRAM_MECHANISMS, sasl_port: int = 0,
                 ssl: bool = False, sasl_ssl_port: int = 0) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.broker_port = broker_port
        self.controller_port = controller_port
        self.extra_listeners = extra_listeners
        self.extra_properties = dict(extra_properties or {})
        self.jvm_opts = tuple(jvm_opts)
        self.startup_timeout = startup_timeout
        self.keep_data = keep_data
        self.detach = detach
        self.pom = pom
        self.cache_root = cache_root
        self.java = java or _find_java()
        self.version = kafka_version(pom)
        self.cluster_id: str | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.last_start_seconds: float | None = None
        self._atexit_registered = False
        self.scram_users = dict(scram_users or {})
        self.scram_mechanisms = tuple(scram_mechanisms)
        if ssl and not self.scram_users:
            raise BrokerError("ssl=True adds a SASL_SSL listener: give scram_users too")
        scram_properties(self.scram_mechanisms)  # validates the mechanisms
        scram_format_args(self.scram_users, self.scram_mechanisms)  # ... and the names and passwords
        self.sasl_port = sasl_port if self.scram_users else 0
        self.ssl = ssl
        self.sasl_ssl_port = sasl_ssl_port if ssl else 0

    # -- paths
    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.broker_port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """host:port of the SASL_PLAINTEXT (SCRAM) listener; only with ``scram_users``."""
        if not self.scram_users:
            raise BrokerError("this broker has no SASL listener: pass scram_users={...}")
        return f"{HOST}:{self.sasl_port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """host:port of the SASL_SSL (SCRAM over TLS) listener; only with ``ssl=True``."""
        if not self.ssl:
            raise BrokerError("this broker has no SASL_SSL listener: pass ssl=True (and scram_users)")
        return f"{HOST}:{self.sasl_ssl_port}"

    @property
    def ssl_cafile(self) -> Path:
        """PEM certificate of the SASL_SSL listener (self-signed, for 127.0.0.1 and localhost)."""
        return self._dir / "tls" / "broker.pem"

    def client_options(self, user: str | None = None, password: str | None = None, *,
                       mechanism: str | None = None, ssl: bool = False) -> dict[str, Any]:
        """kafka-python settings for the SCRAM listener (``ssl=True``: the SASL_SSL one).

        ``user`` defaults to the first of ``scram_users`` and ``password`` to its password.
        """
        if user is None:
            user = next(iter(self.scram_users), None)
            if user is None:
                raise BrokerError("this broker has no SCRAM users")
        if password is None:
            password = self.scram_users[user]
        options: dict[str, Any] = {
            "bootstrap_servers": self.sasl_ssl_bootstrap_servers if ssl else self.sasl_bootstrap_servers,
            "security_protocol": "SASL_SSL" if ssl else "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism or self.scram_mechanisms[0],
            "sasl_plain_username": user,
            "sasl_plain_password": password,
        }
        if ssl:
            options["ssl_cafile"] = str(self.ssl_cafile)
        return options

    def add_scram_user(self, user: str, password: str, mechanisms: tuple[str, ...] | None = None) -> None:
        """Create or update ``user``'s SCRAM credentials on the running broker (admin client, PLAINTEXT)."""
        from kafka import KafkaAdminClient
        from kafka.admin import UserScramCredentialUpsertion

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="devbroker-scram")
        try:
            for mech in mechanisms or self.scram_mechanisms:  # one credential of a user per request
                result = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user, mech, password)])
                if result.get(user):
                    raise BrokerError(f"adding SCRAM user {user!r} ({mech}) failed: {result[user]}")
        finally:
            admin.close()
        self.scram_users[user] = password

    @property
    def log_path(self) -> Path:
        return self._dir / "broker.log"

    @property
    def properties_path(self) -> Path:
        return self._dir / "server.properties"

    @property
    def _dir(self) -> Path:
        if self.data_dir is None:
            raise BrokerError("the broker has no data directory yet: start it first")
        return self.data_dir

    # -- lifecycle
    def start(self) -> DevBroker:
        """Start the broker and block until it answers a metadata request; return self."""
        if self.is_alive():
            return self
        began = time.monotonic()
        lib = ensure_jars(self.pom, self.cache_root)
        fresh_temp_dir = self.data_dir is None
        if fresh_temp_dir:
            self.data_dir = Path(tempfile.mkdtemp(prefix="interest-stream-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_in(lib)
        except BaseException:
            self._kill()
            if fresh_temp_dir and not self.keep_data:  # the error carries the log's tail
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None
            raise
        self.last_start_seconds = time.monotonic() - began
        return self

    def _start_in(self, lib: Path) -> None:
        # ports we may pick again
        chosen = (not self.broker_port, not self.controller_port, not self.sasl_port, not self.sasl_ssl_port)
        for attempt in range(3):
            self._choose_ports()
            self._write_config()
            self._format(lib)
            self._launch(lib)
            try:
                self._wait_ready()
                return
            except BrokerError as exc:
                self._kill()
                if not any(chosen) or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                # someone took a port we picked before the JVM bound it: pick again
                self.broker_port = 0 if chosen[0] else self.broker_port
                self.controller_port = 0 if chosen[1] else self.controller_port
                self.sasl_port = 0 if chosen[2] else self.sasl_port
                self.sasl_ssl_port = 0 if chosen[3] else self.sasl_ssl_port

    def stop(self, keep_data: bool | None = None, timeout: float = 30.0) -> None:
        """SIGTERM the broker's process group, SIGKILL after ``timeout`` s; remove the data unless kept."""
        self._terminate(timeout)
        keep = self.keep_data if keep_data is None else keep_data
        if not keep and self.data_dir is not None and self.data_dir.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, keep_data: bool = True, down_seconds: float = 0.0) -> DevBroker:
        """Stop and start again on the same ports (and, by default, the same data: nothing is lost)."""
        self._terminate(30.0)
        if not keep_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.cluster_id = None
        if down_seconds:
            time.sleep(down_seconds)
        ports = (self.broker_port, self.controller_port, self.sasl_port, self.sasl_ssl_port)
        self.start()
        if (self.broker_port, self.controller_port, self.sasl_port, self.sasl_ssl_port) != ports:
            raise BrokerError(f"restart moved the broker from ports {ports}")
        return self

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault tests); the data directory stays."""
        self._kill()

    def is_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_is_broker(self.pid, self.properties_path)

    def status(self) -> dict[str, Any]:
        """What the CLI shows and stores: pid, ports, bootstrap, data dir, version, alive."""
        return {
            "pid": self.pid,
            "alive": self.is_alive(),
            "bootstrap_servers": self.bootstrap_servers,
            "broker_port": self.broker_port,
            "controller_port": self.controller_port,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "log": str(self.log_path) if self.data_dir else None,
            "cluster_id": self.cluster_id,
            "kafka_version": self.version,
            **({"sasl_bootstrap_servers": self.sasl_bootstrap_servers} if self.scram_users else {}),
            **({"sasl_ssl_bootstrap_servers": self.sasl_ssl_bootstrap_servers} if self.ssl else {}),
        }

    @classmethod
    def from_status(cls, state: Mapping[str, Any], **kwargs: Any) -> DevBroker:
        """A handle on a broker another process started (the CLI's state file)."""
        broker = cls(state["data_dir"], broker_port=int(state["broker_port"]),
                     controller_port=int(state["controller_port"]), detach=True, **kwargs)
        broker.pid = state.get("pid")
        broker.cluster_id = state.get("cluster_id")
        return broker

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DevBroker({self.bootstrap_servers}, pid={self.pid}, data_dir={self.data_dir})"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no broker log)"

    # -- internals
    def _choose_ports(self) -> None:
        taken = {lst.port for lst in self.extra_listeners}
        taken |= {p for p in (self.sasl_port, self.sasl_ssl_port) if p}
        if not self.broker_port:
            self.broker_port = free_port(exclude=taken)
        taken.add(self.broker_port)
        if not self.controller_port:
            self.controller_port = free_port(exclude=taken)
        taken.add(self.controller_port)
        if self.scram_users and not self.sasl_port:
            self.sasl_port = free_port(exclude=taken)
            taken.add(self.sasl_port)
        if self.ssl and not self.sasl_ssl_port:
            self.sasl_ssl_port = free_port(exclude=taken)

    def _security_listeners(self) -> tuple[Listener, ...]:
        listeners = []
        if self.scram_users:
            listeners.append(Listener(SASL_LISTENER, self.sasl_port, protocol="SASL_PLAINTEXT"))
        if self.ssl:
            listeners.append(Listener(SASL_SSL_LISTENER, self.sasl_ssl_port, protocol="SASL_SSL"))
        return tuple(listeners)

    def _security_properties(self) -> dict[str, str]:
        if not self.scram_users:
            return {}
        names = tuple(lst.name for lst in self._security_listeners())
        props = scram_properties(self.scram_mechanisms, listener_names=names)
        if self.ssl:
            keystore, password = self._ensure_certificate()
            prefix = f"listener.name.{SASL_SSL_LISTENER.lower()}"
            props.update({
                f"{prefix}.ssl.keystore.type": "PKCS12",
                f"{prefix}.ssl.keystore.location": str(keystore),
                f"{prefix}.ssl.keystore.password": password,
                f"{prefix}.ssl.key.password": password,
            })
        return props

    def _ensure_certificate(self) -> tuple[Path, str]:
        """A self-signed PKCS12 keystore for 127.0.0.1/localhost and its PEM certificate (keytool)."""
        tls = self._dir / "tls"
        keystore, pem, secret = tls / "broker.p12", tls / "broker.pem", tls / "keystore-password"
        if keystore.exists() and pem.exists() and secret.exists():
            return keystore, secret.read_text().strip()
        keytool = shutil.which("keytool") or str(Path(self.java).with_name("keytool"))
        if not Path(keytool).exists() and shutil.which(keytool) is None:
            raise BrokerError("keytool (from the JDK) is needed for the SASL_SSL listener")
        tls.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(16)
        for path in (keystore, pem):
            path.unlink(missing_ok=True)
        steps = [
            [keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30",
             "-dname", "CN=127.0.0.1, OU=interest-stream devbroker", "-ext", "SAN=ip:127.0.0.1,dns:localhost",
             "-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", password, "-keypass", password],
            [keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore),
             "-storetype", "PKCS12", "-storepass", password, "-file", str(pem)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise BrokerError(f"keytool failed ({proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        return keystore, password

    def _write_config(self) -> None:
        values = broker_properties(self._dir / "kraft", broker_port=self.broker_port,
                                   controller_port=self.controller_port,
                                   extra_listeners=(*self.extra_listeners, *self._security_listeners()))
        extra = {**self._security_properties(), **self.extra_properties}
        self.properties_path.write_text(render_server_properties(values, extra))

    def _format(self, lib: Path) -> None:
        meta = self._dir / "kraft" / "meta.properties"
        if meta.exists():  # formatted before: keep the data (restart, or a kept data dir)
            match = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.M)
            self.cluster_id = match.group(1) if match else self.cluster_id
            return
        self.cluster_id = self.cluster_id or new_cluster_id()
        cmd = [self.java, "-Xmx256m", "-XX:TieredStopAtLevel=1", *self._jvm_base(lib), "kafka.tools.StorageTool", "format",
               "-t", self.cluster_id, "-c", str(self.properties_path),
               *scram_format_args(self.scram_users, self.scram_mechanisms)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{_tail(proc.stdout + proc.stderr)}")

    def _jvm_base(self, lib: Path) -> list[str]:
        return ["-cp", f"{lib}/*", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"]

    def _launch(self, lib: Path) -> None:
        cmd = [self.java, *self.jvm_opts, *self._jvm_base(lib), "kafka.Kafka", str(self.properties_path)]
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir,
                start_new_session=True, preexec_fn=None if self.detach else _die_with_parent)
        finally:
            log.close()
        self.pid = self._proc.pid
        if not self.detach and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True

    def _stop_at_exit(self) -> None:
        if self.is_alive():
            self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with {self._proc.returncode} while starting; "
                                  f"last lines of {self.log_path}:\n{self.log_tail()}")
            if _port_open(HOST, self.broker_port):
                try:
                    probe_metadata(self.bootstrap_servers, timeout=5.0)
                    if self.scram_users:  # the credentials from format time work on the SASL listener(s)
                        probe_metadata(timeout=5.0, **self.client_options())
                    if self.ssl:
                        probe_metadata(timeout=5.0, **self.client_options(ssl=True))
                    return
                except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        self._kill()
        raise BrokerError(f"the Kafka broker did not answer within {self.startup_timeout:.0f} s "
                          f"({last_error}); last lines of {self.log_path}:\n{self.log_tail()}")

    def _terminate(self, timeout: float) -> None:
        if self.pid is None or not self.is_alive():
            self._reap()
            return
        _signal_group(self.pid, signal.SIGTERM)
        if not self._wait_gone(timeout):
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(10.0)
        self._reap()

    def _kill(self) -> None:
        if self.pid is not None and self.is_alive():
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(10.0)
        self._reap()

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                return True
            time.sleep(0.05)
        return not self.is_alive()

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = None
        self.pid = None


def probe_metadata(bootstrap_servers: str, timeout: float = 5.0, **client_options: Any) -> dict[str, Any]:
    """One metadata round trip (``describe_cluster``); raises unless a broker is registered.

    ``client_options`` are extra kafka-python settings (SASL/SSL) for the admin client.
    """
    from kafka import KafkaAdminClient

    ms = int(timeout * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="devbroker-probe",
                             bootstrap_timeout_ms=ms, request_timeout_ms=ms, **client_options)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    if not cluster.get("brokers"):
        raise BrokerError(f"no broker registered yet: {cluster}")
    return cluster


# ------------------------------------------------------------------------------- CLI state and reuse


def load_state() -> DevBroker | None:
    """The broker recorded by ``interest-stream broker start``, if its state file exists."""
    path = state_file()
    if not path.is_file():
        return None
    return DevBroker.from_status(json.loads(path.read_text()))


def save_state(broker: DevBroker) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(broker.status(), indent=2) + "\n")
    tmp.replace(path)
    return path


def clear_state() -> None:
    state_file().unlink(missing_ok=True)


def bootstrap_servers_or_start(**broker_kwargs: Any) -> tuple[str, DevBroker | None]:
    """Bootstrap servers to use, starting a broker only when there is none.

    Order (:func:`consumers.kafka_config.resolve_bootstrap`): ``INTEREST_STREAM_BOOTSTRAP_SERVERS``,
    ``KAFKA_BOOTSTRAP_SERVERS``, a live broker started by ``interest-stream broker start``; else a new
    :class:`DevBroker`, returned too so the caller stops it (the others are not the caller's).
    """
    found = resolve_bootstrap(None)
    if found:
        return found, None
    broker = DevBroker(**broker_kwargs).start()
    return broker.bootstrap_servers, broker


# ------------------------------------------------------------------------------------------ helpers


def _find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17+ is needed to run the Kafka broker; install it or set JAVA_HOME")
    return java


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the broker leads its own session, so its group id is its pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _pid_is_broker(pid: int, properties: Path) -> bool:
    """Is ``pid`` a live (not zombie) ``kafka.Kafka`` JVM on ``properties``? Guards against pid reuse."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"kafka.Kafka" in cmdline and str(properties).encode() in cmdline


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
