"""Set the Airflow UI admin's password for the simple auth manager (run by airflow-init).

Airflow 3's simple auth manager reads its users from
``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` and their passwords from a JSON
file (``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE``); a user missing
from the file gets a random password, printed once in the api-server's log.
This script writes the admin's entry in that file before the api-server starts:

* ``AIRFLOW_ADMIN_PASSWORD`` set: that password (re-applied at every start, so
  changing it in .env and running ``docker compose up -d`` changes it).
* empty: keep the password already in the file, or generate a random one and
  print it (``docker compose logs airflow-init``). There is no default password.

When the UI is published beyond loopback (``AIRFLOW_BIND`` not 127.x/::1/
localhost), a chosen password must be at least 12 characters and not a
well-known default, or the stack does not start.

Other users' entries in the file are kept. Exit status 1 with a message that
says what to change when a setting is refused.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

MIN_LENGTH_BEYOND_LOOPBACK = 12
WELL_KNOWN = {"admin", "airflow", "password", "changeme", "change-me", "secret", "12345678"}


def is_loopback(bind: str) -> bool:
    host = bind.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_password(password: str, bind: str) -> str | None:
    """A reason to refuse ``password`` when the UI is published on ``bind``, or None."""
    if is_loopback(bind) or not password:
        return None  # loopback only, or a random password will be generated
    if len(password) < MIN_LENGTH_BEYOND_LOOPBACK or password.lower() in WELL_KNOWN:
        return (f"AIRFLOW_BIND={bind} publishes the Airflow UI beyond this machine, but "
                f"AIRFLOW_ADMIN_PASSWORD is weak (a well-known default or shorter than "
                f"{MIN_LENGTH_BEYOND_LOOPBACK} characters). Set a strong AIRFLOW_ADMIN_PASSWORD "
                f"in .env, or leave it empty to get a random one, or set AIRFLOW_BIND=127.0.0.1.")
    return None


def admin_user(users_setting: str) -> str:
    """The first user with the admin role in a ``user:role,...`` setting."""
    for item in users_setting.split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[1].strip() == "admin" and parts[0].strip():
            return parts[0].strip()
    raise ValueError(f"no admin in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS={users_setting!r}; "
                     "expected e.g. 'admin:admin'")


def write_passwords(path: Path, user: str, password: str) -> tuple[str, bool]:
    """Update ``path``; return (the user's password, whether it was generated)."""
    current: dict[str, str] = {}
    if path.is_file() and path.read_text().strip():
        current = json.loads(path.read_text())
    generated = False
    if not password:
        password = current.get(user) or ""
        if not password:
            password = secrets.token_urlsafe(18)
            generated = True
    current[user] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".passwords-")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600
            f.write(json.dumps(current) + "\n")
        uid = os.environ.get("AIRFLOW_UID")
        if os.geteuid() == 0 and uid and uid.isdigit():
            os.chown(tmp, int(uid), 0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return password, generated


def main() -> int:
    env = os.environ
    try:
        user = admin_user(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"))
    except ValueError as err:
        print(f"airflow-init: {err}", file=sys.stderr)
        return 1
    path = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if not path:
        print("airflow-init: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set",
              file=sys.stderr)
        return 1
    password = env.get("AIRFLOW_ADMIN_PASSWORD", "")
    reason = check_password(password, env.get("AIRFLOW_BIND", "127.0.0.1"))
    if reason:
        print(f"airflow-init: {reason}", file=sys.stderr)
        return 1
    password, generated = write_passwords(Path(path), user, password)
    if generated:
        print(f"airflow-init: generated a password for the Airflow UI user '{user}': {password}\n"
              "airflow-init: (kept across restarts; set AIRFLOW_ADMIN_PASSWORD in .env to choose one)")
    else:
        source = ("AIRFLOW_ADMIN_PASSWORD" if env.get("AIRFLOW_ADMIN_PASSWORD")
                  else f"an earlier run (docker compose exec airflow-apiserver cat {path})")
        print(f"airflow-init: Airflow UI user '{user}' has the password from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
