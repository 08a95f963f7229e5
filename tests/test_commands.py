"""Every command quoted in README.md and in the config files' comments runs (snakemake ones as dry runs), and
every rule of those runs receives exactly the settings `atsg config` prints for the same files: a preset runs
the published method and nothing of the demo."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from atsg.ablation import variant_configs
from atsg.config import deep_merge, load_config, run_json

PLACEHOLDERS = ("<", "…", "...")
STAGES = (
    "synth",
    "tile",
    "pretrain",
    "train_classifier",
    "extract_cams",
    "generate_masks",
    "refine_labels",
    "train_segmentation",
    "predict",
    "evaluate",
)


def _documented() -> dict[str, tuple[str, list[str]]]:
    """command text -> (where it is quoted, argv)."""
    found: dict[str, tuple[str, list[str]]] = {}

    def add(text: str, where: str) -> None:
        argv = shlex.split(" ".join(text.replace("\\\n", " ").split()), comments=True)
        while argv:  # `a && b` is two commands
            cut = argv.index("&&") if "&&" in argv else len(argv)
            if argv[:cut]:
                found.setdefault(shlex.join(argv[:cut]), (where, argv[:cut]))
            argv = argv[cut + 1 :]

    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            add(line, "README.md")
    for span in re.findall(r"`((?:snakemake|atsg|pip) [^`]+)`", readme):
        add(span, "README.md")
    for path in sorted((REPO / "config").glob("*.yaml")):
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2].strip() if line.lstrip().startswith("#") else ""
            if comment.startswith(("snakemake ", "atsg ")):
                add(comment, path.name)
            for span in re.findall(r"`((?:snakemake|atsg) [^`]+)`", comment):
                add(span, path.name)
    return found


COMMANDS = _documented()


def test_the_documented_commands_were_found():
    texts = list(COMMANDS)
    assert any("config/potsdam.yaml" in t and t.startswith("snakemake") for t in texts)
    assert any("config/paper.yaml" in t for t in texts) and any(t.startswith("atsg ablate") for t in texts)
    assert sum(t.startswith("snakemake") for t in texts) >= 12


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A folder that looks like the checkout (the workflow's files linked) where commands may write freely."""
    folder = tmp_path_factory.mktemp("checkout")
    for name in (
        "Snakefile",
        "config",
        "workflow",
        "profiles",
        "envs",
        "README.md",
        "constraints.txt",
        "pyproject.toml",
        "atsg",
    ):
        (folder / name).symlink_to(REPO / name)
    return folder


def _params_of(output: str, runtime: str) -> list[tuple[str, dict, str | None]]:
    """(stage, merged --params, ablation variant or None) of every atsg command a dry run printed; ``runtime``
    is what the workflow put in $ATSG_RUNTIME (test_pipeline_graph checks that it is the config's run keys)."""
    import json

    out = []
    for line in output.splitlines():
        if not line.startswith("Shell command: atsg "):
            continue
        argv = shlex.split(line.removeprefix("Shell command: "))
        merged: dict = {}
        for k, arg in enumerate(argv):
            if arg == "--params":
                given = argv[k + 1]
                merged = deep_merge(merged, json.loads(runtime if given == "$ATSG_RUNTIME" else given))
        variant = re.search(r"/ablations/([^/]+)/", line)
        out.append((argv[1], merged, variant.group(1) if variant else None))
    return out


def _same_settings(stage: str, given: dict, expected: dict) -> list[str]:
    """Keys a rule received with another value than the config has (the supervised bound gets a subset)."""
    wrong = []
    for section, values in given.items():
        if not isinstance(values, dict):
            if expected[section] != values:
                wrong.append(f"{stage}: {section} = {values!r}, config says {expected[section]!r}")
            continue
        for key, value in values.items():
            if expected[section].get(key, object()) != value:
                wrong.append(f"{stage}: {section}.{key} = {value!r}, config says {expected[section].get(key)!r}")
    return wrong


def _snakemake_config(argv: list[str]) -> tuple[list[str], dict]:
    """(config files, --config values) of a snakemake command line, as snakemake reads them."""
    from snakemake.cli import parse_config

    files, entries, option = [], [], None
    for arg in argv[1:]:
        if arg.startswith("-"):
            option = arg
            continue
        if option == "--configfile":
            files.append(arg)
        elif option == "--config":
            entries.append(arg)
    return files, parse_config(entries)


@pytest.mark.parametrize("text", [t for t, (_, argv) in COMMANDS.items() if argv[0] == "snakemake"])
def test_documented_snakemake_commands_run_and_pass_the_config_they_name(text, checkout, cli_env):
    where, argv = COMMANDS[text]
    if "--report" in argv:
        pytest.skip("builds a report of a finished run: tests/test_report.py builds and renders the tiny chain's")
    if "--sdm" in argv and shutil.which("conda") is None:
        pytest.skip("conda is not installed here; tests/test_workflow.py checks every rule's environment file")
    extra = [] if "--unlock" in argv or "--lint" in argv else ["-n", "-p"]
    result = subprocess.run([*argv, *extra], cwd=checkout, env=cli_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{where}: {text}\n{(result.stdout + result.stderr)[-3000:]}"
    if "--unlock" in argv or "--lint" in argv:  # the lint: a finding is a non-zero exit
        return
    files, overrides = _snakemake_config(argv)
    expected = load_config([checkout / f for f in files] or [REPO / "config" / "config.yaml"], overrides)
    variants = variant_configs(expected)  # a variant's jobs get the variant's settings
    stages = _params_of(result.stdout + result.stderr, run_json(expected))
    assert stages, f"{where}: {text} scheduled no atsg command"
    wrong = [
        w
        for stage, given, variant in stages
        for w in _same_settings(stage, given, variants[variant] if variant else expected)
    ]
    assert wrong == [], f"{where}: {text}\n" + "\n".join(wrong[:10])


@pytest.mark.parametrize("text", [t for t, (_, argv) in COMMANDS.items() if argv[0] == "atsg"])
def test_documented_atsg_commands_run(text, checkout, cli_env):
    where, argv = COMMANDS[text]
    atsg = [sys.executable, "-m", "atsg.cli"]
    options = [a for a in argv[2:] if a.startswith("--") and a != "--"]
    for command in STAGES if argv[1] == "<stage>" else [argv[1]]:  # `atsg <stage> ...`: every stage
        help_text = subprocess.run([*atsg, command, "--help"], env=cli_env, capture_output=True, text=True)
        assert help_text.returncode == 0, f"{where}: {text}: no command {command}\n{help_text.stderr[-2000:]}"
        missing = [o for o in options if o not in help_text.stdout]
        assert missing == [], f"{where}: {text}: atsg {command} has no {missing}"
    if argv[1] == "config":
        args = [a.replace("…", "config/potsdam.yaml") for a in argv[2:]]
    elif argv[1] == "ablate" and not any(p in text for p in PLACEHOLDERS):
        args = [*argv[2:], *([] if "--" in argv else ["--"]), "-n"]  # the ablation target as a dry run
    else:
        return  # a stage named in prose (`atsg tile`): its --help above is the check
    result = subprocess.run(
        [*atsg, argv[1], *args], cwd=checkout, env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{where}: {text}\n{(result.stdout + result.stderr)[-3000:]}"


@pytest.mark.parametrize(
    "text", [t for t, (_, argv) in COMMANDS.items() if argv[0] in ("pip", "python3", ".", "pytest")]
)
def test_documented_install_commands(text, cli_env):
    where, argv = COMMANDS[text]
    if argv[0] != "pip":
        pytest.skip(".ci/run runs README's set-up and test commands from a clean clone")
    result = subprocess.run(
        [sys.executable, "-m", "pip", *argv[1:2], "--dry-run", "--quiet", *argv[2:]],
        cwd=REPO,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{where}: {text}\n{result.stderr[-3000:]}"
