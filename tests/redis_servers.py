"""Throwaway redis-server processes for tests of how Switchboard reaches Redis: TLS, a replica, a
sentinel. Each runs in its own folder on a free port, with no persistence, and is stopped by its pid."""
from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib

from bench.measure import cluster_ports
from tests import process_groups
from tests.gateway import free_port

SERVER = shutil.which("redis-server")


def require_redis_server(tls: bool = False) -> str:
    if SERVER is None:
        pytest.skip("redis-server is not installed")
    if tls:
        version = subprocess.run([SERVER, "--version"], capture_output=True, text=True).stdout
        if "v=" in version and int(version.split("v=")[1].split(".")[0]) < 6:
            pytest.skip(f"redis-server has no TLS: {version}")
    return SERVER


@dataclass(frozen=True)
class Certificates:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_certificates(folder: Path) -> Certificates:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, both
    signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
        cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("switchboard test CA")).issuer_name(name("switchboard test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert, key

    ca_path, _ = write("ca", ca, ca_key)
    server_cert, server_key = write("server", *leaf("redis"))
    client_cert, client_key = write("client", *leaf("switchboard"))
    return Certificates(ca_path, server_cert, server_key, client_cert, client_key)


class RedisServer:
    """One redis-server (or, with `sentinel`, a sentinel) process."""

    def __init__(self, folder: Path, *args: str, tls: Certificates | None = None, config: str = "", sentinel: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        command = [require_redis_server(tls is not None)]
        if config or sentinel:
            conf = folder / "redis.conf"
            listen = (f"port 0\ntls-port {self.port}\ntls-cert-file {tls.server_cert}\ntls-key-file {tls.server_key}\n"
                      f"tls-ca-cert-file {tls.ca}\ntls-replication yes\n") if tls else f"port {self.port}\n"
            conf.write_text(f"{listen}dir {folder}\n{config}")
            command.append(str(conf))
            if sentinel:
                command.append("--sentinel")
        else:
            command += ["--port", "0" if tls else str(self.port)]
            if tls:
                command += ["--tls-port", str(self.port), "--tls-cert-file", tls.server_cert, "--tls-key-file", tls.server_key,
                            "--tls-ca-cert-file", tls.ca]
        if not sentinel:
            command += ["--dir", str(folder), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        command += ["--logfile", str(folder / "redis.log"), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis_lib.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "redis.log").read_text()[-2000:] if (folder / "redis.log").exists() else ""
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {log}") from None
                time.sleep(0.05)

    def client(self, **kwargs) -> redis_lib.Redis:
        if self.tls is not None:
            return redis_lib.Redis(port=self.port, ssl=True, ssl_ca_certs=self.tls.ca, ssl_certfile=self.tls.client_cert,
                                   ssl_keyfile=self.tls.client_key, socket_timeout=2, **kwargs)
        return redis_lib.Redis(port=self.port, socket_timeout=2, **kwargs)

    def kill(self) -> None:
        """Gone at once, as a crashed machine is (its clients see their connections drop)."""
        process_groups.kill(self.proc)

    def stop(self) -> None:
        process_groups.stop(self.proc)


def sentinel_config(service: str, master_port: int) -> str:
    """A sentinel that alone decides (quorum 1) and is quick about it."""
    return (f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n")


def wait_until(check, timeout: float = 30.0, step: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except redis_lib.RedisError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


class RedisClusterNodes:
    """A real Redis Cluster of `masters` redis-server processes on local ports, its slots spread by
    `redis-cli --cluster create`, with `replicas` replicas per master."""

    def __init__(self, folder: Path, masters: int = 3, replicas: int = 0):
        require_redis_server()
        self.nodes: list[RedisServer] = []
        try:
            for n, port in enumerate(cluster_ports(masters * (1 + replicas))):
                node_folder = folder / f"node{n}"
                node_folder.mkdir(parents=True, exist_ok=True)
                self.nodes.append(_ClusterNode(node_folder, port))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            made = subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create", *addresses,
                                   "--cluster-replicas", str(replicas), "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if made.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]} {made.stderr[-2000:]}")
            wait_until(lambda: all(b"cluster_state:ok" in node.client().execute_command("CLUSTER", "INFO") for node in self.nodes),
                       what="the cluster to be ok on every node")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self) -> redis_lib.RedisCluster:
        return redis_lib.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class _ClusterNode(RedisServer):
    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.port = port
        self.tls = None
        self.proc = subprocess.Popen([require_redis_server(), "--port", str(port), "--cluster-enabled", "yes",
                                      "--cluster-config-file", str(folder / "nodes.conf"), "--cluster-node-timeout", "2000",
                                      "--dir", str(folder), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                                      "--logfile", str(folder / "redis.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.client().ping(), timeout=20, what=f"cluster node {port}")
