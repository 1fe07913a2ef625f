"""Database migrations: which tool a file belongs to, and whether it can be undone.

Detection and rollback evidence per tool follow ../reference/inputs-vuln-iac.md §2.5:

- Alembic: ``revision``/``down_revision`` assignments; reversible when ``downgrade()`` has a
  real body (not ``pass``, ``...`` or ``raise NotImplementedError``).
- Django: ``class Migration(migrations.Migration)``; built-in operations reverse themselves,
  ``RunPython`` needs ``reverse_code`` and ``RunSQL`` needs ``reverse_sql``.
- Flyway: ``V<ver>__<desc>.sql``; reversible when a matching ``U<ver>__*.sql`` exists.
- Liquibase: changelogs (XML/YAML/JSON/formatted SQL); every changeSet needs an explicit
  rollback unless all its changes are ones Liquibase reverses automatically.
- Rails: ``db/migrate/<14 digits>_*.rb``; ``change`` or ``up``/``down`` reverse, unless the
  file raises ``ActiveRecord::IrreversibleMigration`` or runs raw ``execute`` in ``change``.
- Prisma: ``prisma/migrations/*/migration.sql`` has no down migration unless a ``down.sql``
  (from ``prisma migrate diff``) sits beside it.
- golang-migrate: ``*.up.sql`` reversible when the sibling ``*.down.sql`` is non-empty.

File contents come from the repository at the change's commit (``git show``), so what is
judged is what was merged, whatever the working tree holds now.
"""

from __future__ import annotations

import ast
import json
import posixpath
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from changeproof.errors import SourceError
from changeproof.evidence import MigrationFile

Reader = Callable[[str], str | None]
Lister = Callable[[str], list[str]]


@dataclass
class GitTree:
    """Read files of one commit with the git CLI (cached: siblings are read more than once)."""

    repo: Path
    commit: str
    _cache: dict[str, str | None] = field(default_factory=dict)
    _dirs: dict[str, list[str]] = field(default_factory=dict)

    def read(self, path: str) -> str | None:
        if path not in self._cache:
            proc = subprocess.run(
                ["git", "-C", str(self.repo), "show", f"{self.commit}:{path}"],
                capture_output=True,
                check=False,
            )
            self._cache[path] = (
                proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None
            )
        return self._cache[path]

    def contents(self) -> dict[str, str | None]:
        """Every file read so far (the raw evidence of the judgement)."""
        return dict(self._cache)

    def listdir(self, directory: str) -> list[str]:
        if directory not in self._dirs:
            spec = f"{directory}/" if directory else "."
            proc = subprocess.run(
                ["git", "-C", str(self.repo), "ls-tree", "--name-only", self.commit, spec],
                capture_output=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SourceError(
                    f"cannot list {directory or '/'} at commit {self.commit[:12]} in {self.repo} "
                    f"({proc.stderr.decode(errors='replace').strip()})",
                    expected="the commit to exist in this clone",
                    hint="fetch the full history (git fetch --unshallow) and run again",
                )
            self._dirs[directory] = [
                posixpath.basename(p) for p in proc.stdout.decode().splitlines() if p
            ]
        return self._dirs[directory]


_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
FLYWAY_V = re.compile(r"^V(?P<ver>\d+(?:[._]\d+)*)__.+\.(?:sql|java)$")
FLYWAY_U = re.compile(r"^U(?P<ver>\d+(?:[._]\d+)*)__.+\.sql$")
RAILS = re.compile(r"^\d{14}_\w+\.rb$")
DJANGO = re.compile(r"^\d{4}_\w+\.py$")
ALEMBIC_REV = re.compile(r"^(down_)?revision\s*(?::[^=\n]+)?=", re.M)


def _sql_has_statements(text: str | None) -> bool:
    return bool(text and _SQL_COMMENT.sub("", text).strip())


def _mf(path: str, tool: str, reversible: bool | None, why: str) -> MigrationFile:
    return MigrationFile(path=path, tool=tool, reversible=reversible, why=why)  # type: ignore[arg-type]


# --- Python tools ------------------------------------------------------------------------


def _empty_body(body: list[ast.stmt]) -> bool:
    real = [
        s
        for s in body
        if not isinstance(s, ast.Pass)
        and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    return not real


def _raises_not_implemented(body: list[ast.stmt]) -> bool:
    real = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not real or not all(isinstance(s, ast.Raise) for s in real):
        return False
    for s in real:
        assert isinstance(s, ast.Raise)
        exc = s.exc.func if isinstance(s.exc, ast.Call) else s.exc
        name = exc.id if isinstance(exc, ast.Name) else getattr(exc, "attr", "")
        if name not in ("NotImplementedError", "IrreversibleError", "Exception", "RuntimeError"):
            return False
    return True


def alembic(path: str, src: str) -> MigrationFile:
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        return _mf(path, "alembic", None, f"cannot parse the revision file ({exc.msg})")
    fn = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "downgrade"), None
    )
    if fn is None:
        return _mf(path, "alembic", False, "no downgrade() function")
    if _empty_body(fn.body):
        return _mf(path, "alembic", False, "downgrade() is empty (pass)")
    if _raises_not_implemented(fn.body):
        return _mf(path, "alembic", False, "downgrade() only raises an error")
    n = len(fn.body)
    return _mf(path, "alembic", True, f"downgrade() has a body ({n} statement(s))")


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _given(node: ast.expr | None) -> bool:
    return node is not None and not (isinstance(node, ast.Constant) and node.value is None)


def django(path: str, src: str) -> MigrationFile:
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        return _mf(path, "django", None, f"cannot parse the migration ({exc.msg})")
    bad: list[str] = []
    special = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name == "RunPython":
            special += 1
            rev = node.args[1] if len(node.args) > 1 else _kw(node, "reverse_code")
            if not _given(rev):
                bad.append(f"RunPython without reverse_code (line {node.lineno})")
        elif name == "RunSQL":
            special += 1
            rev = node.args[1] if len(node.args) > 1 else _kw(node, "reverse_sql")
            if not _given(rev):
                bad.append(f"RunSQL without reverse_sql (line {node.lineno})")
    if bad:
        return _mf(path, "django", False, "; ".join(bad))
    if special:
        return _mf(path, "django", True, "RunPython/RunSQL declare their reverse")
    return _mf(path, "django", True, "built-in operations reverse themselves")


# --- Rails ---------------------------------------------------------------------------------


def _ruby_def_body(src: str, name: str) -> str | None:
    m = re.search(rf"^(\s*)def\s+{name}\b[^\n]*\n(?P<body>.*?)^\1end\b", src, re.M | re.S)
    return m.group("body") if m else None


def rails(path: str, src: str) -> MigrationFile:
    if "IrreversibleMigration" in src:
        return _mf(path, "rails", False, "raises ActiveRecord::IrreversibleMigration")
    down = _ruby_def_body(src, "down")
    if down is not None:
        if not down.strip():
            return _mf(path, "rails", False, "def down is empty")
        return _mf(path, "rails", True, "def up / def down")
    change = _ruby_def_body(src, "change")
    if change is None:
        return _mf(path, "rails", None, "neither def change nor def up/down found")
    guarded = "reversible" in change or "up_only" in change
    if re.search(r"^\s*execute\b", change, re.M) and not guarded:
        return _mf(path, "rails", False, "raw execute in def change cannot be reversed")
    if re.search(r"^\s*remove_column\s+:\w+,\s*:\w+\s*$", change, re.M):
        return _mf(path, "rails", False, "remove_column without a column type cannot be reversed")
    if re.search(r"^\s*drop_table\s+:\w+\s*$", change, re.M):
        return _mf(path, "rails", False, "drop_table without a block cannot be reversed")
    return _mf(path, "rails", True, "def change (Rails reverses it)")


# --- Liquibase -----------------------------------------------------------------------------

AUTO_ROLLBACK = frozenset(
    {
        "addAutoIncrement",
        "addColumn",
        "addDefaultValue",
        "addForeignKeyConstraint",
        "addLookupTable",
        "addNotNullConstraint",
        "addPrimaryKey",
        "addUniqueConstraint",
        "createIndex",
        "createSequence",
        "createTable",
        "createView",
        "dropNotNullConstraint",
        "renameColumn",
        "renameSequence",
        "renameTable",
        "renameView",
        "tagDatabase",
    }
)
SUB_ELEMENTS = frozenset(
    {
        "column",
        "constraints",
        "where",
        "whereParams",
        "param",
        "comment",
        "preConditions",
        "validCheckSum",
        "modifySql",
        "append",
        "prepend",
        "replace",
        "regExpReplace",
        "and",
        "or",
        "not",
        "dbms",
        "runningAs",
        "changeSetExecuted",
        "tableExists",
        "columnExists",
        "sqlCheck",
        "columns",
        "changes",
        "changeSet",
        "id",
        "author",
        "loadData",  # listed below as not auto, handled through the name check
    }
) - {"loadData"}


def _judge_changeset(label: str, has_rollback: bool, changes: list[str]) -> str | None:
    if has_rollback:
        return None
    manual = sorted({c for c in changes if c not in AUTO_ROLLBACK})
    if not changes:
        return f"changeSet {label} has no rollback"
    if manual:
        return f"changeSet {label} ({', '.join(manual)}) has no rollback"
    return None


def _liquibase_xml(src: str) -> list[tuple[str, str | None]]:
    out = []
    for m in re.finditer(r"<changeSet\b(?P<attrs>[^>]*)>(?P<body>.*?)</changeSet>", src, re.S):
        ident = re.search(r'\bid\s*=\s*"([^"]*)"', m.group("attrs"))
        label = ident.group(1) if ident else "?"
        body = re.sub(r"<!--.*?-->", "", m.group("body"), flags=re.S)
        tags = [t.split(":")[-1] for t in re.findall(r"<([A-Za-z][\w:]*)", body)]
        has_rb = "rollback" in tags
        changes = [t for t in tags if t not in SUB_ELEMENTS and t != "rollback"]
        out.append((label, _judge_changeset(label, has_rb, changes)))
    return out


def _liquibase_yaml(src: str) -> list[tuple[str, str | None]]:
    out = []
    blocks = re.split(r"^\s*-\s*changeSet\s*:\s*$", src, flags=re.M)[1:]
    for b in blocks:
        ident = re.search(r"^\s*id\s*:\s*['\"]?([^'\"\n]+)", b, re.M)
        label = ident.group(1).strip() if ident else "?"
        has_rb = bool(re.search(r"^\s*rollback\s*:", b, re.M))
        changes_part = b.split("rollback:")[0]
        names = re.findall(r"^\s*-\s*(\w+)\s*:", changes_part, re.M)
        changes = [n for n in names if n not in SUB_ELEMENTS]
        out.append((label, _judge_changeset(label, has_rb, changes)))
    return out


def _liquibase_json(src: str) -> list[tuple[str, str | None]]:
    try:
        doc = json.loads(src)
    except ValueError:
        return [("?", "the JSON changelog cannot be parsed")]
    out = []
    for entry in doc.get("databaseChangeLog") or () if isinstance(doc, dict) else ():
        cs = entry.get("changeSet") if isinstance(entry, dict) else None
        if not isinstance(cs, dict):
            continue
        label = str(cs.get("id", "?"))
        changes = [next(iter(c)) for c in cs.get("changes") or () if isinstance(c, dict) and c]
        out.append((label, _judge_changeset(label, "rollback" in cs, changes)))
    return out


def _liquibase_sql(src: str) -> list[tuple[str, str | None]]:
    out = []
    parts = re.split(r"^\s*--\s*changeset\s+", src, flags=re.M | re.I)[1:]
    for p in parts:
        label = p.split(None, 1)[0] if p.strip() else "?"
        has_rb = bool(re.search(r"^\s*--\s*rollback\s+\S", p, re.M | re.I))
        # formatted SQL is never rolled back automatically
        out.append((label, None if has_rb else f"changeset {label} has no --rollback"))
    return out


def liquibase(path: str, src: str) -> MigrationFile | None:
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".sql":
        sets = _liquibase_sql(src)
    elif ext == ".json":
        sets = _liquibase_json(src)
    elif ext in (".yaml", ".yml"):
        sets = _liquibase_yaml(src)
    else:
        sets = _liquibase_xml(src)
    if not sets:
        return None  # a master changelog that only includes others
    problems = [p for _, p in sets if p]
    if problems:
        return _mf(path, "liquibase", False, "; ".join(problems))
    return _mf(path, "liquibase", True, f"{len(sets)} changeSet(s), each with a rollback")


# --- dispatch ------------------------------------------------------------------------------


def detect(path: str, read: Reader, listdir: Lister) -> MigrationFile | None:
    """Classify one changed file; ``None`` when it is not a migration (or only a companion
    such as a down/undo file, judged with the migration it belongs to)."""
    base = posixpath.basename(path)
    directory = posixpath.dirname(path)
    low = base.lower()
    if low.endswith(".down.sql") or FLYWAY_U.match(base):
        return None
    if base == "down.sql" and "prisma" in path.lower():
        return None  # the down migration of the Prisma migration beside it
    if low.endswith(".up.sql"):
        down = path[: -len(".up.sql")] + ".down.sql"
        text = read(down)
        if text is None:
            return _mf(path, "golang-migrate", False, f"no {posixpath.basename(down)}")
        if not _sql_has_statements(text):
            return _mf(path, "golang-migrate", False, f"{posixpath.basename(down)} is empty")
        return _mf(path, "golang-migrate", True, f"{posixpath.basename(down)} undoes it")
    if base == "migration.sql" and "/migrations/" in f"/{path}" and "prisma" in path.lower():
        down = posixpath.join(directory, "down.sql")
        if _sql_has_statements(read(down)):
            return _mf(path, "prisma", True, "down.sql (prisma migrate diff) beside it")
        return _mf(path, "prisma", False, "Prisma migrations have no down migration")
    fm = FLYWAY_V.match(base)
    if fm:
        ver = fm.group("ver")
        undo = [n for n in listdir(directory) if (u := FLYWAY_U.match(n)) and u.group("ver") == ver]
        if undo and _sql_has_statements(read(posixpath.join(directory, undo[0]))):
            return _mf(path, "flyway", True, f"undo migration {undo[0]}")
        return _mf(path, "flyway", False, f"no U{ver}__*.sql undo migration")
    if base.startswith("R__") and low.endswith(".sql"):
        return _mf(path, "flyway", True, "repeatable migration: re-applying the previous version")
    src = read(path)
    if src is None:
        return None
    if low.endswith(".rb") and (RAILS.match(base) or "ActiveRecord::Migration" in src):
        return rails(path, src)
    if low.endswith(".py"):
        if "class Migration(" in src and "migrations.Migration" in src:
            return django(path, src)
        if len(ALEMBIC_REV.findall(src)) >= 2 or ("down_revision" in src and "def upgrade" in src):
            return alembic(path, src)
        return None
    if low.endswith((".xml", ".yaml", ".yml", ".json")) and "databaseChangeLog" in src:
        return liquibase(path, src)
    if low.endswith(".sql"):
        if re.search(r"^\s*--\s*liquibase\s+formatted\s+sql", src, re.M | re.I):
            return liquibase(path, src)
        return _mf(path, "unknown", None, "SQL file of no recognised migration tool")
    if DJANGO.match(base) or low.endswith((".java", ".js", ".ts", ".cs", ".go")):
        return _mf(path, "unknown", None, "no recognised migration tool")
    return None
