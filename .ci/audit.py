"""Vulnerability audit of the installed pinned requirements (the venv `make install` built), with pip-audit.

Fails (exit 1) on a known vulnerability unless its ID is listed in .ci/audit-ignore.txt with a
reason; an entry without a reason fails too. pip-audit asks OSV (its default service); where OSV
cannot be reached it asks PyPI's JSON API (`-s pypi`). Where neither answers for a package (PyPI
mirrors that serve no per-version pages answer 404 for every one), this script falls back to the
project page of PyPI's JSON API, whose `vulnerabilities` are those of the latest release: a
package pinned at its latest release is audited that way, any other is listed as not audited.
Nothing audited at all fails only with SKYPROPHET_AUDIT_REQUIRED=1 (GitHub's CI, where OSV
answers); otherwise it says so loudly and exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
IGNORE_FILE = Path(os.environ.get("SKYPROPHET_AUDIT_IGNORE", HERE / "audit-ignore.txt"))
PIP_AUDIT = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--desc", "off", "--format", "json"]
PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"


def ignored() -> dict[str, str]:
    """ID -> reason from the reviewed ignore file; an entry without a reason is an error."""
    entries = {}
    for number, line in enumerate(IGNORE_FILE.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            sys.exit(f"audit: {IGNORE_FILE.name}:{number}: {vuln_id} has no reason; say why it is accepted")
        entries[vuln_id] = reason.strip()
    return entries


def pip_audit(service: str, ignore: dict[str, str]) -> tuple[dict | None, str]:
    """pip-audit's JSON report on this environment, or None and the reason when the service failed."""
    command = [*PIP_AUDIT, "-s", service, *[arg for i in ignore for arg in ("--ignore-vuln", i)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    try:
        return json.loads(done.stdout), ""
    except json.JSONDecodeError:
        return None, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300]


def project_page_vulnerabilities(name: str, version: str) -> tuple[list[dict] | None, str]:
    """Vulnerabilities of ``name==version`` from PyPI's project page when it is the latest release."""
    try:
        answer = requests.get(PYPI_PROJECT.format(name=name), timeout=30)
        answer.raise_for_status()
        page = answer.json()
    except (requests.RequestException, ValueError) as err:
        return None, f"PyPI project page: {err.__class__.__name__}"
    latest = page["info"]["version"]
    if latest != version:
        return None, f"pinned {version}, latest {latest}: PyPI's project page covers only the latest"
    return page.get("vulnerabilities") or [], ""


def main() -> int:
    """Run the audit; print each finding; exit 1 on an unlisted vulnerability."""
    ignore = ignored()
    report, failure = pip_audit("osv", ignore)
    service = "OSV"
    if report is None:
        print(f"audit: OSV did not answer ({failure}); asking PyPI's JSON API", file=sys.stderr)
        report, failure = pip_audit("pypi", ignore)
        service = "PyPI JSON API"
    if report is None:
        print(f"audit: pip-audit failed on PyPI too ({failure})", file=sys.stderr)
        report = {"dependencies": []}
    found, unaudited, audited = [], [], 0
    for dep in report["dependencies"]:
        if "skip_reason" not in dep:
            audited += 1
            found += [(dep["name"], dep["version"], v["id"], v.get("fix_versions", [])) for v in dep["vulns"]]
            continue
        version = dep.get("version") or metadata.version(dep["name"])  # skipped ones carry no version
        vulns, why = project_page_vulnerabilities(dep["name"], version)
        if vulns is None:
            unaudited.append(f"{dep['name']}=={version} ({why})")
            continue
        audited += 1
        for vuln in vulns:
            ids = [vuln["id"], *vuln.get("aliases", [])]
            if not any(i in ignore for i in ids):
                found.append((dep["name"], version, vuln["id"], vuln.get("fixed_in", [])))
    for name, version, vuln_id, fixes in found:
        print(f"audit: VULNERABLE {name}=={version}: {vuln_id} (fixed in {', '.join(fixes) or 'no release yet'})")
    for vuln_id, reason in ignore.items():
        print(f"audit: ignored {vuln_id}: {reason}")
    for line in unaudited:
        print(f"audit: not audited: {line}")
    print(
        f"audit: {audited} packages audited ({service}, else PyPI's project pages), {len(unaudited)} not audited, "
        f"{len(found)} known vulnerabilities not in {IGNORE_FILE.name}"
    )
    if found:
        return 1
    if audited == 0:
        print("audit: NOTHING AUDITED: no vulnerability service answered from this machine", file=sys.stderr)
        return 1 if os.environ.get("SKYPROPHET_AUDIT_REQUIRED") == "1" else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
