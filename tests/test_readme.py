"""README's commands work as written from a fresh shell: no activated venv, nothing of the venv
on PATH. Each command of its ```bash blocks is run (or, where a real run would train models,
checked as far as is cheap) in a tiny copy of the project whose `.venv` is this test's venv:

- `make T …`: `make -n T …` resolves (the target exists; `make exp S=…` params are valid keys);
- `.venv/bin/dvc exp run -S k=v …`: every `-S` passes params validation (`tests/test_pipeline.py`
  runs the full pipeline); one such command, limited to the prepare stage, runs for real;
- `.venv/bin/dvc repro …`: `--dry` on the prepare stage; other `.venv/bin/dvc …` commands run as written;
- `bin/ganaug …`: as written with `--dry-run`, else its `--help`;
- `.venv/bin/python script` / `-m module`, other `.venv/bin/` tools, `benchmarks/…`: they exist;
- `git …`: not run. Anything else fails, naming the command, until this file learns to check it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO
from ganaug.config import ConfigError, params_from_dict

pytestmark = pytest.mark.slow

README = REPO / "README.md"
NEEDS_ACTIVATED_VENV = {"dvc", "ganaug", "mlflow", "python", "pytest", "pip", "jupyter"}
TINY = {"image_size": 28, "phantom": {"n_images": 60}}  # data overrides: prepare in seconds


def readme_commands(text: str) -> list[list[str]]:
    """Each command of the ```bash blocks as argv: continuations joined, comments dropped, `&&` split."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            current: list[str] = []
            for token in [*shlex.split(line, comments=True), "&&"]:
                if token in ("&&", "||", ";"):
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(token)
    return commands


def overrides(args: list[str]) -> dict[str, str]:
    """{key: value} of the `-S key=value` options (also `S="k=v k=v"` for make exp)."""
    pairs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-S", "--set-param")]
    pairs += [p for a in args if a.startswith("S=") for p in a[2:].split()]
    return dict(p.split("=", 1) for p in pairs)


def validate_overrides(pairs: dict[str, str]) -> None:
    """Apply `-S` values (parsed as YAML, as DVC does) to params.yaml and validate the result."""
    yaml = YAML(typ="safe", pure=True)
    raw = yaml.load((REPO / "params.yaml").read_text())
    for key, value in pairs.items():
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = yaml.load(value)
    params_from_dict(raw)


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """A tiny git + DVC copy of the project whose `.venv` is this venv, and a runner whose PATH
    holds no dvc, ganaug or mlflow (a fresh shell)."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("run the tests from a virtual environment (the README's .venv)")
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "bin", root / "bin")
    shutil.copytree(REPO / "presets", root / "presets")  # README runs bin/ganaug exp --preset presets/...
    for name in ("dvc.yaml", "Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, root / name)
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text() + "/.venv\n/dvc_plots/\n")
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    yaml = YAML()
    params = yaml.load((REPO / "params.yaml").read_text())
    params["data"]["image_size"] = TINY["image_size"]
    params["data"]["phantom"]["n_images"] = TINY["phantom"]["n_images"]
    with open(root / "params.yaml", "w") as f:
        yaml.dump(params, f)

    tools = ("dvc", "ganaug", "mlflow")
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not any((Path(d) / t).exists() for t in tools)]
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "VIRTUAL_ENV", "GANAUG_LAUNCHER")}
    env |= {"PATH": os.pathsep.join(path or ["/usr/bin", "/bin"]), "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "t@example.com"}
    assert not any(shutil.which(t, path=env["PATH"]) for t in tools)

    def run(*argv: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        if ok:
            assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    run("git", "init", "-q")
    run(".venv/bin/dvc", "init", "-q")
    run(".venv/bin/dvc", "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "tiny project")
    return root, run


COMMANDS = readme_commands(README.read_text())


def test_readme_has_commands_to_check():
    firsts = {c[0] for c in COMMANDS}
    assert {"make", ".venv/bin/dvc", "bin/ganaug"} <= firsts, firsts


@pytest.mark.parametrize("argv", COMMANDS, ids=[shlex.join(c)[:70] for c in COMMANDS])
def test_readme_command_works_without_the_venv_on_path(argv, shell):
    root, run = shell
    while argv[0] in ("nice", "time") or re.fullmatch(r"-n|-?\d+|[A-Z_]+=.*", argv[0]):  # wrappers, VAR=value
        argv = argv[1:]
    tool, args = argv[0], argv[1:]
    assert tool not in NEEDS_ACTIVATED_VENV, (
        f"README command {shlex.join(argv)!r} needs an activated venv: write .venv/bin/{tool}, bin/ganaug or a make target"
    )
    if tool == "git":
        return
    if tool == "make":
        validate_overrides(overrides(args))
        done = run("make", "-n", *args)
        if args[0] == "exp":
            assert " ".join(f"-S {k}={v}" for k, v in overrides(args).items()) in done.stdout
    elif tool == ".venv/bin/dvc" and args[:2] == ["exp", "run"]:
        validate_overrides(overrides(args))
    elif tool == ".venv/bin/dvc" and args[:1] == ["repro"]:
        targets = [a for a in args[1:] if not a.startswith("-")]
        run(tool, "repro", "--dry", *args[1:], *([] if targets else ["prepare"]))  # the others need trained models
    elif tool == ".venv/bin/dvc":
        run(tool, *args)
    elif tool == "bin/ganaug":
        done = run(tool, *(args if "--dry-run" in args else [*args, "--help"]))
        assert done.stdout.strip()
    elif tool == ".venv/bin/python" and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, f"README runs python -m {args[1]}: no such module"
    elif tool == ".venv/bin/python":
        assert (REPO / args[0]).is_file(), f"README runs {args[0]}: no such file"
    elif tool.startswith(".venv/bin/"):
        assert (root / tool).is_file(), f"README runs {tool}: not installed in the venv"
    elif tool.startswith("benchmarks/"):
        assert os.access(REPO / tool, os.X_OK), f"README runs {tool}: not an executable file of the repository"
    else:
        pytest.fail(f"README command {shlex.join(argv)!r}: tests/test_readme.py has no check for {tool!r}; add one")


def test_readme_python_blocks_compile():
    for block in re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        compile(block, "README.md", "exec")


def test_exp_run_from_a_fresh_shell_runs_the_stage_through_bin_ganaug(shell):
    """The README's `.venv/bin/dvc exp run -S gan.lr_g=0.0001`, limited to the prepare stage."""
    root, run = shell
    done = run(".venv/bin/dvc", "exp", "run", "-S", "gan.lr_g=0.0001", "prepare")
    assert "Running stage 'prepare'" in done.stdout and "> bin/ganaug prepare" in done.stdout
    assert (root / "data/prepared/dataset.npz").is_file()
    assert YAML(typ="safe", pure=True).load((root / "params.yaml").read_text())["gan"]["lr_g"] == 0.0001


@pytest.mark.parametrize("bad, key", [("gan.lr_gg=0.1", "gan.lr_gg"), ("data.image_size=20", "data.image_size"),
                                      ("gan.arch=cgan", "gan.mode")])
def test_validate_overrides_names_the_bad_key(bad, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_overrides(overrides(["-S", bad]))


def launcher_env(tmp_path: Path) -> dict[str, str]:
    """No venv, no ganaug on PATH, no PYTHONPATH: only the system's tools."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "ganaug").exists() and Path(d).resolve() != Path(sys.prefix, "bin").resolve()]
    return {"PATH": os.pathsep.join(path), "HOME": str(tmp_path)}


def test_bin_ganaug_in_a_dvc_temp_copy_runs_the_real_roots_venv(tmp_path):
    if sys.prefix == sys.base_prefix:
        pytest.skip("run the tests from a virtual environment (the README's .venv)")
    copy = tmp_path / "root" / ".dvc" / "tmp" / "exps" / "standalone" / "tmpabc123"
    shutil.copytree(REPO / "bin", copy / "bin")
    (tmp_path / "root" / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = launcher_env(tmp_path) | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([str(copy / "bin" / "ganaug"), "--help"], cwd=copy, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ganaug")


def test_bin_ganaug_without_an_environment_says_what_it_looked_for(tmp_path):
    shutil.copytree(REPO / "bin", tmp_path / "project" / "bin")
    env = launcher_env(tmp_path)
    probe = subprocess.run(["python3", "-c", "import ganaug"], env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine's python3 imports ganaug, the launcher's last fallback")
    done = subprocess.run([str(tmp_path / "project" / "bin" / "ganaug"), "prepare"], env=env, capture_output=True, text=True)
    assert done.returncode == 127
    assert f"expected {tmp_path / 'project' / '.venv' / 'bin' / 'python'}" in done.stderr
    assert "make setup" in done.stderr
