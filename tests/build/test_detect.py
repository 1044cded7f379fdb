"""Stack detection and Procfile parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shellwego.build.detect import BuildPlan, detect, parse_procfile
from shellwego.errors import BuildFailed

STATIC_WEB = 'python3 -m http.server "$PORT" --bind 0.0.0.0 --directory {}'

CASES: list[tuple[str, dict[str, str], BuildPlan]] = [
    (
        "python with Procfile",
        {
            "requirements.txt": "flask\n",
            "Procfile": "web: gunicorn app:app\nworker: python3 w.py\n",
        },
        BuildPlan("python", {"web": "gunicorn app:app", "worker": "python3 w.py"}),
    ),
    (
        "python app.py default",
        {"requirements.txt": "", "app.py": "print(1)\n"},
        BuildPlan("python", {"web": "python app.py"}),
    ),
    (
        "pyproject",
        {"pyproject.toml": "[project]\nname='x'\n", "app.py": ""},
        BuildPlan("python", {"web": "python app.py"}),
    ),
    (
        "node start script",
        {"package.json": '{"scripts": {"start": "node index.js"}}'},
        BuildPlan("node", {"web": "npm start"}),
    ),
    (
        "node server.js (npm's default start)",
        {"package.json": "{}", "server.js": ""},
        BuildPlan("node", {"web": "npm start"}),
    ),
    (
        "pipenv",
        {"Pipfile": "[packages]\n", "Pipfile.lock": "{}", "app.py": ""},
        BuildPlan("python", {"web": "python app.py"}),
    ),
    (
        "node with Procfile",
        {"package.json": "{}", "Procfile": "web: node server.js\n"},
        BuildPlan("node", {"web": "node server.js"}),
    ),
    (
        "static root",
        {"index.html": "<h1>hi</h1>"},
        BuildPlan("static", {"web": STATIC_WEB.format(".")}),
    ),
    (
        "static public",
        {"public/index.html": "<h1>hi</h1>"},
        BuildPlan("static", {"web": STATIC_WEB.format("public")}),
    ),
    (
        "python wins over static",
        {"requirements.txt": "six\n", "index.html": "", "app.py": ""},
        BuildPlan("python", {"web": "python app.py"}),
    ),
    (
        "Procfile only",
        {"Procfile": "# comment\n\nweb: ./serve --port $PORT\n"},
        BuildPlan("generic", {"web": "./serve --port $PORT"}),
    ),
]


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "plan"), [(f, p) for _, f, p in CASES], ids=[c[0] for c in CASES]
)
def test_detection(tmp_path: Path, files: dict[str, str], plan: BuildPlan) -> None:
    write(tmp_path, files)
    assert detect(tmp_path) == plan


def test_nothing_supported(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "hello"})
    with pytest.raises(BuildFailed) as raised:
        detect(tmp_path)
    assert str(raised.value) == (
        "no supported app found: add a Procfile, requirements.txt, package.json or index.html"
    )


def test_node_without_a_start_script_asks_for_one(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": '{"scripts": {"build": "tsc"}}', "index.js": ""})
    with pytest.raises(BuildFailed) as raised:
        detect(tmp_path)
    assert str(raised.value) == (
        "Node.js app without a Procfile or a start script: add \"start\" to package.json's "
        "scripts, or a Procfile, e.g. 'web: node index.js'"
    )


def test_python_without_entry_point_asks_for_a_procfile(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "flask\n"})
    with pytest.raises(BuildFailed, match="add a Procfile"):
        detect(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: ok\nthis line is wrong\n", "Procfile line 2: expected 'type: command'"),
        ("\n# c\nweb:\n", "Procfile line 3: expected 'type: command'"),
        ("Web!: run\n", "Procfile line 1: invalid process type"),
        ("web: a\nweb: b\n", "Procfile line 2: process type 'web' is defined twice"),
        ("# only a comment\n", "Procfile defines no process types"),
    ],
)
def test_bad_procfile(text: str, message: str) -> None:
    with pytest.raises(BuildFailed) as raised:
        parse_procfile(text)
    assert str(raised.value).startswith(message)


def test_procfile_commands_keep_colons_and_spaces() -> None:
    assert parse_procfile("web:   gunicorn --bind 0.0.0.0:$PORT app:app  \r\n") == {
        "web": "gunicorn --bind 0.0.0.0:$PORT app:app"
    }
