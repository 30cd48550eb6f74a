"""deploy/ is checked as far as this machine can: the systemd units pass `systemd-analyze verify`,
every command a unit or the crontab runs exists and takes the arguments given, the nginx site passes
`nginx -t`, and the environment template names exactly the settings the code reads."""
from __future__ import annotations

import ast
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from relay.client_ip import parse_networks
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.gateway import ROOT
from tests.relay_harness import Relay, assert_money_consistent, request_log
from workers import queues

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())
APP_DIR = "/srv/switchboard"
# Set by `switchboard up` for its own children; not an operator's setting.
INTERNAL = {"SWITCHBOARD_SUPERVISOR_PID"}
SETTING = re.compile(r"SWITCHBOARD_[A-Z0-9_]+|DATABASE_URL|REDIS_URL")


def exec_lines() -> list[tuple[str, list[str]]]:
    """(unit, argv) of every ExecStart, templates instantiated with a sample instance name."""
    found = []
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                found.append((unit.name, line.split("=", 1)[1].replace("%i", "8001").split()))
    return found


def switchboard_args() -> list[list[str]]:
    """The `switchboard …` arguments the units and the crontab run."""
    runs = [argv[1:] for _, argv in exec_lines() if argv[0] == f"{APP_DIR}/.venv/bin/switchboard"]
    for line in (DEPLOY / "crontab").read_text().splitlines():
        command = line.lstrip("# ")
        if ".venv/bin/switchboard " in command:
            runs.append(command.split(".venv/bin/switchboard ", 1)[1].split())
    for line in (DEPLOY / "bin" / "switchboard-backup").read_text().splitlines():
        if line.startswith(".venv/bin/switchboard "):
            runs.append([arg for arg in line.split()[1:] if not arg.startswith('"')])
    return runs


def script_modules() -> set[str]:
    return set(re.findall(r"python -m (scripts\.\w+)", (DEPLOY / "crontab").read_text()))


@pytest.fixture
def cli_env(tmp_path, redis_slot):
    return dict(os.environ, REDIS_URL=redis_slot.url, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", SWITCHBOARD_INSTANCE=str(tmp_path))


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    env_file = tmp_path / "switchboard.env"
    env_file.write_text((DEPLOY / "switchboard.env").read_text())
    for unit in UNITS:
        text = unit.read_text().replace(APP_DIR, str(ROOT)).replace("/etc/switchboard/switchboard.env", str(env_file))
        name = unit.name.replace("@.", "@8001.") if "@." in unit.name else unit.name
        (tmp_path / name).write_text(text)
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".service", ".target"))
    done = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (0, ""), done.stderr


def test_every_command_the_units_and_crontab_run_exists_with_those_arguments(cli_env):
    runs = switchboard_args()
    assert {args[0] for args in runs} >= {"relay", "web", "ingest", "worker", "scheduler", "backup"}
    assert any(args[:2] == ["db", "upgrade"] for args in runs)
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "controlplane", *args, "--help"], cwd=ROOT, env=cli_env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stderr)
    # The two workers between them serve every queue, and name only queues that exist.
    named = [args[i + 1] for args in runs if args[0] == "worker" for i, arg in enumerate(args) if arg == "--queue"]
    assert sorted(named) == sorted((*queues.ALL, queues.PROBE))
    for module in script_modules():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (module, done.stderr)
    for helper in ("switchboard-cron", "switchboard-backup"):
        assert os.access(DEPLOY / "bin" / helper, os.X_OK)
        assert subprocess.run(["sh", "-n", str(DEPLOY / "bin" / helper)], capture_output=True).returncode == 0


def test_the_cron_wrapper_is_quiet_on_success_and_speaks_on_failure(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("SWITCHBOARD_LOG_LEVEL=INFO\n")
    env = dict(os.environ, ENV_FILE=str(env_file), APP_DIR=str(tmp_path))
    wrapper = str(DEPLOY / "bin" / "switchboard-cron")
    ok = subprocess.run([wrapper, "sh", "-c", "echo fine"], env=env, capture_output=True, text=True)
    busy = subprocess.run([wrapper, "sh", "-c", "echo locked; exit 75"], env=env, capture_output=True, text=True)
    found = subprocess.run([wrapper, "sh", "-c", "echo 2 findings; exit 3"], env=env, capture_output=True, text=True)
    assert (ok.returncode, ok.stdout, busy.returncode, busy.stdout) == (0, "", 75, "")
    assert found.returncode == 3 and "2 findings" in found.stdout and "[exit 3]" in found.stdout
    # The shipped template is what cron's shell reads too (systemd's EnvironmentFile= reads it for the units).
    template = dict(env, ENV_FILE=str(DEPLOY / "switchboard.env"))
    seen = subprocess.run([wrapper, "sh", "-c", 'echo "$SWITCHBOARD_TRUSTED_PROXIES|$DATABASE_URL"; exit 9'], env=template,
                          capture_output=True, text=True)
    assert "127.0.0.1/32,::1/128|postgresql://switchboard:CHANGE-ME@127.0.0.1:5432/switchboard" in seen.stdout, seen.stdout + seen.stderr


def test_the_nginx_site_passes_nginx_t(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    openssl = shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx (apt-get install nginx-light) or openssl is not installed")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out",
                    str(tmp_path / "cert.pem"), "-days", "1", "-subj", "/CN=gateway.example.com"], check=True, capture_output=True)
    site = (DEPLOY / "nginx" / "switchboard.conf").read_text()
    site = (site.replace("/etc/letsencrypt/live/gateway.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
            .replace("/etc/letsencrypt/live/gateway.example.com/privkey.pem", str(tmp_path / "key.pem"))
            .replace("/etc/nginx/snippets/switchboard-relay.conf", str(DEPLOY / "nginx" / "switchboard-relay.conf")))
    (tmp_path / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
                                         f"http {{\n  access_log off;\n  {temp}\n  include {tmp_path / 'site.conf'};\n}}\n")
    done = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
    relay = (DEPLOY / "nginx" / "switchboard-relay.conf").read_text()
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "gzip off;", "proxy_read_timeout 330s;"):
        assert re.search(rf"^{re.escape(directive)}$", relay, re.M), directive
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site


def _settings_read_by_the_code() -> set[str]:
    names = set()
    for folder in ("relay", "controlplane", "workers", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.fullmatch(node.value):
                    names.add(node.value)
    return names - INTERNAL


def test_the_environment_template_names_every_setting_and_only_those():
    template = set(re.findall(rf"^#?({SETTING.pattern})=", (DEPLOY / "switchboard.env").read_text(), re.M))
    code = _settings_read_by_the_code()
    assert sorted(code - template) == [], "settings the code reads that deploy/switchboard.env does not document"
    assert sorted(template - code) == [], "settings in deploy/switchboard.env that nothing reads"


# --- the site in front of a real relay ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nginx_in_front(app, tmp_path):
    """The shipped site and snippet, on loopback ports, in front of a real relay (its own HTTP server)
    that trusts nginx's address only; a fake OpenAI upstream behind the relay."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None or shutil.which("openssl") is None:
        pytest.skip("nginx (apt-get install nginx-light) or openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out",
                    str(tmp_path / "cert.pem"), "-days", "1", "-subj", "/CN=gateway.example.com"], check=True, capture_output=True)
    upstream = FakeOpenAI()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    factories.channel(upstream.url)
    relay = Relay(app, trusted_proxies=parse_networks("127.0.0.1/32"))
    https = _free_port()
    try:
        with relay.served() as address:
            site = (DEPLOY / "nginx" / "switchboard.conf").read_text()
            site = re.sub(r"(?m)^\s*listen \[::\]:\d+.*$", "", site)
            site = re.sub(r"(?m)^\s*listen 80;$", f"    listen 127.0.0.1:{_free_port()};", site)
            site = re.sub(r"(?m)^\s*listen 443 ssl http2;$", f"    listen 127.0.0.1:{https} ssl;", site)
            site = re.sub(r"(?ms)(upstream switchboard_relay \{).*?(keepalive 64;)", rf"\1\n    server {address[0]}:{address[1]};\n    \2", site)
            site = (site.replace("/etc/letsencrypt/live/gateway.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
                    .replace("/etc/letsencrypt/live/gateway.example.com/privkey.pem", str(tmp_path / "key.pem"))
                    .replace("/etc/nginx/snippets/switchboard-relay.conf", str(DEPLOY / "nginx" / "switchboard-relay.conf")))
            (tmp_path / "site.conf").write_text(site)
            temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            user_line = "user root;\n" if os.geteuid() == 0 else ""  # workers must read this test's private folder
            (tmp_path / "nginx.conf").write_text(
                f"{user_line}worker_processes 1;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
                f"http {{\n  access_log off;\n  {temp}\n  include {tmp_path / 'site.conf'};\n}}\n")
            server = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", https), timeout=1).close()
                        break
                    except OSError:
                        assert server.poll() is None, server.stderr.read().decode() if server.stderr else "nginx exited"
                        time.sleep(0.05)
                yield https, secret, upstream, relay
            finally:
                server.terminate()
                server.wait(10)
    finally:
        upstream.close()


def _post(port: int, key: str, body: dict, headers: dict | None = None) -> http.client.HTTPResponse:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    # From 127.0.0.2: a client address that is not the trusted proxy's.
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30, source_address=("127.0.0.2", 0))
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Host": "gateway.example.com",
                          **(headers or {})})
    return conn.getresponse()


def test_through_nginx_streams_arrive_as_written_and_the_client_address_is_nginxs_to_tell(nginx_in_front):
    port, key, upstream, relay = nginx_in_front
    words = " ".join(f"w{i}" for i in range(40))
    upstream.push(Behaviour(content=words, chunk_gap=0.25))
    reply = _post(port, key, {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Say hello"}]},
                  {"X-Forwarded-For": "6.6.6.6"})  # a client's claim: left of nginx's own entry, never believed
    assert reply.status == 200 and reply.getheader("content-type", "").startswith("text/event-stream")
    first = b""
    while not first.startswith(b"data: "):
        first = reply.readline()
    # The first event is here while the upstream is still writing the other 39: nothing buffered it.
    assert upstream.in_flight == 1, "nginx held the stream back until the upstream had finished"
    assert json.loads(first[len(b"data: "):])["object"] == "chat.completion.chunk"
    request_id = reply.getheader("x-request-id")
    reply.close()

    done = _post(port, key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}, {"X-Forwarded-For": "6.6.6.6"})
    assert done.status == 200
    log = request_log(done.getheader("x-request-id"))
    assert log.client_ip == "127.0.0.2"  # nginx's entry for the client, the spoofed one ignored
    assert request_id and request_log(request_id).client_ip == "127.0.0.2"
    assert_money_consistent(relay.redis)
