"""Issue 39, the house: README is the front door and docs/ holds one page per concern; every relative link resolves,
nothing in the repository points outside it (at a sibling folder or an absolute checkout path), and every platform command shown in a fenced block of README.md or
docs/*.md parses with the platform's own parser (never run): a renamed or removed flag fails here."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_commands(text: str) -> list[str]:
    """Platform command lines in ```bash blocks: continuation lines joined, comments and env prefixes dropped."""
    out = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            for part in re.split(r"\s*(?:&&|;|\||&$|& )\s*", line):
                words = shlex.split(part, comments=True) if part else []
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words[:3] == ["ray", "job", "submit"] and "--" in words:  # the job's entry point
                    words = words[words.index("--") + 1:]
                if words and words[0].endswith("/stocktrend"):  # .venv/bin/stocktrend
                    words[0] = "stocktrend"
                redirect = next((i for i, w in enumerate(words) if re.match(r"^\d?>", w)), len(words))
                words = words[:redirect]
                if words[:1] == ["stocktrend"] or words[:3] in (["python", "-m", "stocktrend"],
                                                                 ["python", "-m", "stocktrend.loop"],
                                                                 ["python", "-m", "stocktrend.tune.search"]):
                    out.append(shlex.join(words))
    return out


def parse(argv: list[str]) -> None:
    """Parse (never run) a command line with the platform's own parsers; raise on a bad command, flag or value."""
    from stocktrend.cli import app
    if argv[0] == "python":
        module, argv = argv[2], argv[3:]
        if module == "stocktrend.tune.search":  # the module's entry point is `stocktrend tune`
            argv = ["tune", *argv]
    else:
        argv = argv[1:]
    cmd = typer.main.get_command(app)  # typer's own click (typer._click in recent releases): duck-typed below
    ctx, name = None, "stocktrend"
    while True:
        ctx = cmd.make_context(name, list(argv), parent=ctx)
        if not hasattr(cmd, "resolve_command"):  # a command, not a group
            return
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return
        name, cmd, argv = cmd.resolve_command(ctx, rest)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert all(len(line) <= 200 for line in text.splitlines())
    for page in ("architecture", "cli", "data", "models", "tuning", "serving", "monitoring", "loop", "deploy",
                 "security", "results", "benchmarks"):
        assert f"(docs/{page}.md)" in text and (ROOT / "docs" / f"{page}.md").is_file(), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not re.match(r"^[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_nothing_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt", "") or \
                not path.is_file() or name == "tests/test_docs.py":
            continue
        text = path.read_text(errors="ignore")
        if "../" + "shared" in text or re.search(r"(?<![\w.])/work/", text):
            offenders.append(name)
    assert not offenders, offenders


def test_every_documented_command_parses():
    commands = [(page.name, c) for page in PAGES for c in fenced_commands(page.read_text())]
    assert len(commands) >= 20, commands
    bad = []
    for page, line in commands:
        try:
            parse(shlex.split(line))
        except SystemExit as exc:  # click's --help: exit 0
            if exc.code not in (0, None):
                bad.append(f"{page}: {line}: exit {exc.code}")
        except Exception as exc:  # click's UsageError family: a bad command, flag or value
            bad.append(f"{page}: {line}: {type(exc).__name__}: {exc}")
    print(f"{len(commands)} documented command lines parsed")
    assert not bad, "\n".join(bad)


def test_a_bad_flag_fails_to_parse():
    with pytest.raises(Exception, match="No such option: --epochz"):
        parse(["stocktrend", "train", "--epochz", "3"])
    with pytest.raises(Exception, match="No such command 'modelz'"):
        parse(["stocktrend", "modelz", "list"])
    with pytest.raises(Exception, match="valid integer"):
        parse(["stocktrend", "train", "--epochs", "three"])
    with pytest.raises(Exception, match="No such option: --num-samplez"):
        parse(["python", "-m", "stocktrend.tune.search", "--num-samplez", "3"])
    with pytest.raises(Exception, match="No such option: --num-samplez"):
        parse(["stocktrend", "tune", "--num-samplez", "3"])
    with pytest.raises(Exception, match="'val_rank' is not one of"):
        parse(["stocktrend", "tune", "--metric", "val_rank"])
    assert fenced_commands("```bash\nVAR=1 stocktrend train \\\n  --epochs 3  # x\n```\n") == \
        ["stocktrend train --epochs 3"]
