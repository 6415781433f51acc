"""The vulnerability audit's reviewed ignore file (.ci/audit-ignore.txt): every entry says why."""

import subprocess
import sys

from skyprophet.config import PROJECT_ROOT

AUDIT = PROJECT_ROOT / ".ci" / "audit.py"


def test_an_ignored_vulnerability_without_a_reason_fails_the_audit_before_any_lookup(tmp_path):
    ignore = tmp_path / "audit-ignore.txt"
    ignore.write_text(
        "# reviewed\nGHSA-aaaa-bbbb-cccc   accepted: not reachable from our code, until 2027-01\nPYSEC-2099-1\n"
    )
    done = subprocess.run(
        [sys.executable, str(AUDIT)],
        env={"SKYPROPHET_AUDIT_IGNORE": str(ignore), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "audit-ignore.txt:3: PYSEC-2099-1 has no reason" in done.stderr, done.stderr


def test_the_projects_ignore_file_gives_a_reason_for_every_entry():
    for line in (PROJECT_ROOT / ".ci" / "audit-ignore.txt").read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        assert not entry or len(entry.split(maxsplit=1)) == 2, f"no reason: {line}"
