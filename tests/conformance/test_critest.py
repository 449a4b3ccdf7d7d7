"""The CRI conformance suite (critest, from ../shared/conformance) against crishim.

The whole suite runs against a crishim in cni mode on a private daemon of the engine
under test. Every spec must pass except those `expected_failures.txt` names for this
engine, each with the reason this machine cannot pass it; a spec listed there that
passes fails the test too, so the list never outlives its reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import conformance
from tests.harness.dockerd import engine_version

EXPECTED = Path(__file__).with_name("expected_failures.txt")


@pytest.mark.timeout(1800)
def test_critest_passes_every_spec_this_machine_allows(conformance_node, workdir) -> None:
    engine = engine_version()
    specs = conformance_node.critest(workdir / "critest")
    expected = conformance.expected_failures(EXPECTED, engine)
    failed = {s.name: s.message for s in specs if s.failed}
    passed = sum(s.state == "passed" for s in specs)
    ran = sum(s.state not in ("skipped", "pending") for s in specs)
    conformance.SUMMARY.append(
        f"critest 1.36.0 on Docker {engine}: {passed} of {ran} specs passed, {len(failed)} failed"
        f" ({len(expected)} listed as this machine's in {EXPECTED.name})"
    )
    unexpected = [
        f"{name}\n  -> {why[:400]}" for name, why in failed.items() if name not in expected
    ]
    fixed = sorted(name for name in expected if name not in failed)
    assert not unexpected, "specs failed that this machine allows:\n" + "\n".join(unexpected)
    assert not fixed, f"listed as expected failures but passed (remove them): {fixed}"
    assert passed == ran - len(expected)
