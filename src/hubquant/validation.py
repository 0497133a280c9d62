"""Validation results: named checks with a status and the numbers they measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class Check:
    """One check on an artifact, with a plain-language detail for the card."""

    name: str
    status: str
    detail: str = ""


@dataclass
class ValidationReport:
    """All checks of one artifact and the metrics the card reports."""

    checks: list[Check] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def add(self, name: str, passed: bool, detail: str = "") -> Check:
        check = Check(name, PASSED if passed else FAILED, detail)
        self.checks.append(check)
        return check

    def skip(self, name: str, reason: str) -> Check:
        check = Check(name, SKIPPED, reason)
        self.checks.append(check)
        return check

    @classmethod
    def turned_off(cls) -> ValidationReport:
        """Return the report of an artifact built with validation off (benchmark runs only)."""
        report = cls()
        report.skip("validation", "turned off for a benchmark run")
        return report

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAILED]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        return PASSED if self.passed else FAILED

    def summary(self) -> str:
        if self.passed:
            return "all checks passed"
        return "; ".join(f"{check.name}: {check.detail}" for check in self.failures)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "checks": [asdict(check) for check in self.checks],
            **self.metrics,
        }
