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
