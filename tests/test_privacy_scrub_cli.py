"""`tutorloop privacy scrub`: any text through the configured scrubber, bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, run_cli


def test_scrub_a_file_and_stdin_with_the_default_scrubber(tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text(
        "Hi, this is Ron Swift, my card payment failed\n\nmail me at jane.doe@example.com\n"
    )
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path)}
    done = run_cli("privacy", "scrub", str(source), env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "Hi, this is <PERSON>, my card payment failed",
        "",
        "mail me at <EMAIL_ADDRESS>",
    ]
    as_json = run_cli("privacy", "scrub", str(source), "--json", env=env, timeout=120)
    first = json.loads(as_json.stdout.splitlines()[0])
    assert first["findings"] == {"PERSON": 1}
    assert first["spans"] == [{"start": 12, "end": 21, "entity": "PERSON"}]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORLOOP_")} | env
    piped = subprocess.run(
        [*CLI, "privacy", "scrub"], input="call +1 (415) 555-0132\n", capture_output=True,
        text=True, env=full_env, timeout=120, check=False,
    )  # fmt: skip
    assert piped.returncode == 0 and "555-0132" not in piped.stdout, piped.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is binary"),
        (b"caf\xe9 latte", "is not UTF-8 text"),
        (b"a" * 10_000_000, "line 1 of"),
    ],
    ids=["empty", "blank", "binary", "latin-1", "10MB-line"],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "input"
    source.write_bytes(content)
    env = {"TUTORLOOP_DATA_DIR": str(tmp_path), "TUTORLOOP_PRIVACY__SCRUBBER": "regex"}
    done = run_cli("privacy", "scrub", str(source), env=env)
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert "aaaaaaaaaa" not in done.stderr  # the input is never echoed
