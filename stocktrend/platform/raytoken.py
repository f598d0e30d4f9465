"""Ray's token authentication, checked rather than assumed.

Ray 2.60 turns token authentication on for a local ``ray.init`` and reads the token from ``RAY_AUTH_TOKEN``, else the
file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. Ray writes that file with the process umask
(0644 here: readable by every local user, who could then submit jobs as you). Before a command starts or joins Ray:

- the token file Ray will read is made 0600 when it is looser (one line says so), and created 0600 when a private
  instance is about to start without one (Ray would otherwise create it 0644);
- ``RAY_AUTH_MODE=disabled`` is named in the log file (a private instance binds loopback only, but any local user
  can then reach it).

The token itself is never printed or logged.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("stocktrend.ray")

MODE_VAR, TOKEN_VAR, PATH_VAR = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def token_file() -> Path | None:
    """The file Ray reads its token from, or None when ``RAY_AUTH_TOKEN`` holds it."""
    if os.environ.get(TOKEN_VAR):
        return None
    if os.environ.get(PATH_VAR):
        return Path(os.environ[PATH_VAR]).expanduser()
    return Path.home() / ".ray" / "auth_token"


def auth_disabled() -> bool:
    return os.environ.get(MODE_VAR, "").strip().lower() == "disabled"


def secure_token(create: bool) -> Path | None:
    """Make the token file Ray will read 0600 (create it so when ``create`` and it is missing); returns its path.

    ``create``: this process is about to start a private instance, for which Ray would write a missing token file
    with the umask's permissions. When joining a cluster the token must already exist: nothing is created."""
    if auth_disabled():
        log.info("Ray token authentication is off (%s=disabled): any local user can reach this Ray instance",
                 MODE_VAR)
        return None
    path = token_file()
    if path is None:
        return None
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            try:
                path.chmod(0o600)
                log.warning("Ray's token file %s was readable by other users (mode %o): now 0600", path, mode)
            except OSError as exc:
                log.warning("Ray's token file %s is readable by other users (mode %o) and could not be made 0600 "
                            "(%s): anyone who can read it can run code on this Ray instance", path, mode, exc)
        return path
    if create and not os.environ.get(PATH_VAR):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command created it meanwhile
            return secure_token(create=False)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        log.info("created Ray's token file %s (0600)", path)
        return path
    return path
