"""The stack the browser tests drive: the real Tollgate server (on its embedded SQLite, in a
temporary folder) and the reference login web app, on loopback ports, with Debian's Chromium
driven headless through its ChromeDriver. Pages are reached at http://localhost:PORT: WebAuthn
refuses an IP address as the relying party."""

import hashlib
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "target" / "browser"
TOLLGATE = os.environ.get("TOLLGATE_BIN", str(ROOT / "target" / "debug" / "tollgate"))
LOGIN_WEB = os.environ.get(
    "LOGIN_WEB_BIN", str(ROOT / "target" / "debug" / "tollgate-login-web")
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, log):
    """Until something accepts connections on the loopback port, or the process exits."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"port {port}: the process exited; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}; see {log}")


def wait_for(url, process, log):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited; see {log}")
        try:
            opener.open(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer; see {log}")


class Stack:
    """Tollgate and the web app, started once for the session."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tollgate-browser-")
        grpc, web = free_port(), free_port()
        self.base = f"http://localhost:{web}"
        api_key = secrets.token_urlsafe(32)
        config = pathlib.Path(self.dir) / "tollgate.toml"
        config.write_text(
            f"""
[server]
listen = "127.0.0.1:{grpc}"
[database]
url = "sqlite://{self.dir}/tollgate.db"
[keys]
file = "{self.dir}/keys.toml"
[metrics]
enabled = false
[health]
max_clock_skew_secs = 0
[login]
free_failures = 5
base_lockout_secs = 30
[otp]
# More codes per login than free failures, so that one login can reach the lockout (the
# default, 5, sends the user back to the password first).
challenge_max_attempts = 10
[webauthn]
rp_id = "localhost"
origins = ["{self.base}"]
[[api_keys]]
name = "login-web"
sha256 = "{hashlib.sha256(api_key.encode()).hexdigest()}"
scopes = ["users:read", "users:write", "organizations:read", "organizations:write",
          "authentication", "sessions", "factors"]
"""
        )
        env = dict(os.environ, RUST_LOG="info")
        self.logs = []
        self.processes = []
        try:
            self.tollgate = self.start(
                [TOLLGATE, "--config", str(config), "serve"], env, "tollgate.log"
            )
            wait_for_port(grpc, self.tollgate, self.logs[-1])
            self.web = self.start([LOGIN_WEB], self.web_env(env, grpc, web, api_key),
                                  "login-web.log")
            wait_for(self.base + "/login", self.web, self.logs[-1])
        except Exception as error:
            logged = self.logged()[-5000:]
            self.stop()
            raise RuntimeError(f"{error}\n{logged}") from error

    def web_env(self, env, grpc, web, api_key):
        return dict(
            env,
            TOLLGATE_ADDR=f"http://127.0.0.1:{grpc}",
            TOLLGATE_API_KEY=api_key,
            LOGIN_WEB_LISTEN=f"127.0.0.1:{web}",
            LOGIN_WEB_PUBLIC_URL=self.base,
        )

    def start(self, command, env, log_name):
        log = pathlib.Path(self.dir) / log_name
        self.logs.append(log)
        process = subprocess.Popen(
            command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.dir
        )
        self.processes.append(process)
        return process

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logged(self):
        return "".join(log.read_text() for log in self.logs)


@pytest.fixture(scope="session")
def stack():
    stack = Stack()
    yield stack
    stack.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, the page as the browser showed it, and the servers' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    driver = item.funcargs.get("chromium")
    if driver is not None:
        driver.save_screenshot(str(SCREENSHOTS / f"failed-{item.name}.png"))
    stack = item.funcargs.get("stack")
    if stack is not None:
        report.sections.append(("server logs", stack.logged()[-20000:]))


@pytest.fixture(scope="session")
def chromium():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1100,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(executable_path="/usr/bin/chromedriver"), options=options
    )
    driver.set_script_timeout(30)
    driver.implicitly_wait(5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
