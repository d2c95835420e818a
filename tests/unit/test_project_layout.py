"""Standing rules of the code base: the pure core, the deploy files, the README's commands."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = {"faust", "mode", "aiokafka", "kafka", "aiohttp", "structlog", "os", "time"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_io_framework() -> None:
    """casebridge.core imports no Kafka, faust, aiohttp, structlog, os or time (it is pure)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN_IN_CORE)
        for path in (ROOT / "services" / "casebridge" / "core").rglob("*.py")
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_core_never_reads_the_clock() -> None:
    """The core takes time as an argument: no datetime.now(), utcnow() or today() calls."""
    pattern = re.compile(r"\b(?:now|utcnow|today)\(\)")
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "services/casebridge/core").rglob("*.py")
            if pattern.search(p.read_text())]
    assert hits == []


def pom_kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)<", (ROOT / "deploy/kafka/pom.xml").read_text())
    assert match, "deploy/kafka/pom.xml must pin <kafka.version>"
    return match.group(1)


def test_compose_file_parses_and_pins_the_pom_kafka_version() -> None:
    """docker-compose.yml parses, and its apache/kafka image is the version the pom pins."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pom_kafka_version()}"
    assert compose["services"]["demo"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy/Dockerfile").exists()


def test_pom_adds_the_slf4j_binding_at_kafkas_log4j_version() -> None:
    """The pom pairs kafka_2.13 with log4j-slf4j-impl, without which the broker logs nothing."""
    pom = (ROOT / "deploy/kafka/pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom


def test_readme_shows_the_two_setup_commands_and_ci_runs_make_test() -> None:
    """README gives `make demo` and `make test`; .ci/run runs `make test`; make has both targets."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert {"demo", "test", "help"} <= set(targets)


def test_make_test_sets_up_chromium_itself_and_ci_just_calls_make() -> None:
    """`make test` depends on the chromium target; .ci/run installs nothing of its own."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\bchromium\b", makefile, re.M)
    assert "apt-get" not in (ROOT / ".ci/run").read_text()


def test_without_chromium_and_apt_make_stops_at_once_with_the_command(tmp_path: Path) -> None:
    """With no Chromium and no apt-get to install it, the check exits 2 before any test, naming
    the one command to run."""
    import subprocess

    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "chromium", f"CHROMIUM={tmp_path}/chromium",
         f"APT_GET={tmp_path}/no-apt-get"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode != 0
    assert "apt-get install -y chromium" in done.stderr and done.stdout == ""


SERVICES = ("node", "router", "deadlines", "monitor")
LAYERS: dict[str, set[str]] = {
    # package -> the casebridge packages it may not import (at module level or inside a function)
    "core": {"runtime", *SERVICES, "localkafka", "demo", "cli"},
    "runtime": {*SERVICES, "localkafka", "demo", "cli"},
    "localkafka": {*SERVICES, "demo", "cli"},
    **{s: {*(set(SERVICES) - {s}), "localkafka", "demo", "cli"} for s in SERVICES},
    "demo": {"cli"},
}


def casebridge_imports(path: Path) -> set[str]:
    """The casebridge packages a module imports anywhere in it (``casebridge.X`` -> ``X``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [])
        found |= {n.split(".")[1] for n in names if n.startswith("casebridge.") and n.count(".") >= 1}
    return found


def test_packages_import_only_the_layers_below_them() -> None:
    """core imports nothing of runtime/node/router/monitor; runtime no service; the services
    (node, router, monitor) do not import each other, the local broker, the demo or the CLI."""
    offenders = {}
    for package, banned in LAYERS.items():
        for path in (ROOT / "services" / "casebridge" / package).rglob("*.py"):
            bad = casebridge_imports(path) & banned
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_every_package_is_placed_in_a_layer() -> None:
    """A new package under casebridge/ must be given its place in LAYERS (cli composes them all)."""
    packages = {p.name for p in (ROOT / "services" / "casebridge").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == {*LAYERS, "cli"}


def readme_commands() -> list[str]:
    """Every ``casebridge …`` command in README's shell blocks (without ``&``, comments, ``$(…)``)."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        match = re.search(r"(?:\.venv/bin/)?\bcasebridge ([^)&#\n]+)", line)
        if match:
            found.append(match.group(1).strip())
    return found


def test_every_casebridge_command_in_readme_parses() -> None:
    """Each command README shows is one the CLI accepts (subcommands and options as written)."""
    import shlex

    from casebridge.cli import build_parser

    commands = readme_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            raise AssertionError(f"README shows `casebridge {command}`, which the CLI refuses") from None
