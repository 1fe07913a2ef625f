"""The workspace: where the store, the locker key and the settings live.

Resolved from options first, then environment (CHANGEPROOF_HOME, CHANGEPROOF_DB,
CHANGEPROOF_CONFIG), then defaults (./.changeproof, SQLite inside it, ./changeproof.toml).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from changeproof.errors import StoreError
from changeproof.settings import SETTINGS_FILE, Settings, load_settings

if TYPE_CHECKING:
    from changeproof.locker import Signer
    from changeproof.store import Store


@dataclass(frozen=True)
class Workspace:
    home: Path
    db_url: str
    config_path: Path

    @staticmethod
    def resolve(
        home: str | None = None, db: str | None = None, config: str | None = None
    ) -> Workspace:
        h = Path(home or os.environ.get("CHANGEPROOF_HOME") or ".changeproof").absolute()
        url = db or os.environ.get("CHANGEPROOF_DB") or f"sqlite:///{h / 'store.db'}"
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        cfg = Path(config or os.environ.get("CHANGEPROOF_CONFIG") or SETTINGS_FILE).absolute()
        return Workspace(h, url, cfg)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file (``--db`` may put it outside the workspace); None for a
        server database or an in-memory one."""
        if not self.is_sqlite or "///" not in self.db_url:
            return None
        return Path(self.db_url.split("///", 1)[1].split("?", 1)[0])

    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def ensure_home(self) -> None:
        """Create the workspace folder (and its key) on first write; explain when we can't."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the workspace folder {self.home} ({exc.strerror})",
                expected="a folder this user may write",
                hint="choose another with --home or CHANGEPROOF_HOME",
            ) from None
        if not os.access(self.home, os.W_OK):
            raise StoreError(
                f"the workspace folder {self.home} is read-only",
                expected="a folder this user may write",
                hint="fix its permissions, or choose another with --home or CHANGEPROOF_HOME",
            )
        from changeproof.locker import PRIVATE_KEY_FILE, Signer

        if not (self.keys_dir / PRIVATE_KEY_FILE).exists():
            Signer.generate(self.keys_dir)

    def open_store(self, *, write: bool = True) -> Store:
        from changeproof.store import Store

        if write:
            self.ensure_home()
        elif self.sqlite_path is not None and not self.sqlite_path.exists():
            from changeproof.errors import NotFoundError

            raise NotFoundError(
                f"no evidence store at {self.sqlite_path}",
                expected="a workspace that has collected evidence",
                hint="run `changeproof collect git PATH` first, or pass --home / --db",
            )
        return Store.open(self.db_url)

    def signer(self) -> Signer:
        from changeproof.locker import Signer

        return Signer.load(self.keys_dir)

    def public_key_pem(self) -> bytes:
        from changeproof.locker import PUBLIC_KEY_FILE

        try:
            return (self.keys_dir / PUBLIC_KEY_FILE).read_bytes()
        except FileNotFoundError:
            from changeproof.errors import LockerError

            raise LockerError(
                f"the workspace public key {self.keys_dir / PUBLIC_KEY_FILE} is missing",
                hint="pass the key with --public-key FILE",
            ) from None
