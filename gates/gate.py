"""The verification gate: re-checks a claimed task on a clean checkout, with the
acceptance criteria taken from main, and publishes the verdict.

`VerificationGate.handle` takes `task.claimed` and `escalation.answered`; everything it
does is idempotent (event ids derive from the cause), so redelivery after a crash only
repeats work, never outcomes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.api import Bus, Subscription
from bus.idempotency import Idempotency
from bus.spend import DAY, PROJECT, SpendLedger
from events import (
    Criterion,
    CriterionResult,
    Decision,
    EscalationAnswered,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    Role,
    ScriptCheck,
    Severity,
    Source,
    TaskClaimed,
    VerificationFailed,
    VerificationPassed,
    VerificationStarted,
    VerificationVerdict,
    utcnow,
)
from gates import CriteriaLoader, Judge
from gates.criteria import load_criteria
from gates.errors import JobError, JudgeError
from gates.gitutil import (
    diff_text,
    fetch,
    main_ref,
    remote_url,
    resolve_commits,
    scratch,
)
from gates.jobs import VERIFY_JOB, InlineJobs, JobRunner, parse_results
from gates.protect import changes, flagged_files, protected_files, tree_files
from gates.settings import GateSettings, TamperPolicy, derived_escalation_id, derived_id
from infra.store import Store

log = logging.getLogger("loops.gate")

GROUP = "gate"
TYPES = ("task.claimed", "escalation.answered")
_APPROVE_WORDS = {"approve", "approved", "yes", "y", "ok", "lgtm", "accept"}
_REJECT_WORDS = {"reject", "rejected", "no", "n", "deny"}


@dataclass
class _Attempt:
    claim: TaskClaimed
    cause: Event
    approvals: frozenset[str]

    def env(self) -> dict[str, Any]:
        return {
            "loop": self.claim.loop,
            "correlation_id": self.claim.correlation_id,
            "causation_id": self.cause.id,
        }

    def verification(self, step: str, commit: str) -> dict[str, Any]:
        """The fields of the gate's `verification.<step>` about this attempt at `commit`:
        an id derived from the cause's (published again, it is the same event), the
        claim's task and attempt, and `env()`."""
        return {
            "id": derived_id(self.cause.id, step),
            "task_id": self.claim.task_id,
            "commit": commit,
            "attempt": self.claim.attempt,
            **self.env(),
        }


class VerificationGate:
    """Consumes claims, runs their checks as jobs, publishes verification events."""

    def __init__(
        self,
        bus: Bus,
        settings: GateSettings,
        *,
        loader: CriteriaLoader,
        judge: Judge | None = None,
        jobs: JobRunner | None = None,
        store: Store | None = None,
        source: Source | None = None,
        spend: SpendLedger | None = None,
    ) -> None:
        self.bus = bus
        self.spend = spend  # verification runs and judge calls count on the project budget
        self.settings = settings
        self.loader = loader
        self.judge = judge
        self.jobs = jobs or InlineJobs()
        self.store = store or Store.memory()
        self.claims = Idempotency(self.store.client, self.store.key("claim"))  # claims verified
        self.source = source or Source(role=Role.GATE)

    def subscribe(self, consumer: str) -> Subscription:
        """This gate as consumer `consumer` of the `gate` group (run it with `.run(stop)`)."""
        return self.bus.subscribe(GROUP, consumer, self.handle, types=TYPES)

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskClaimed):
            if not self.claims.seen(event.id):
                self._verify(_Attempt(event, event, frozenset()))
                self.claims.mark(event.id)  # only once verified: a crash verifies again
        elif isinstance(event, EscalationAnswered):
            self._answered(event)

    # ------------------------------------------------------------------ verification

    def _verify(self, at: _Attempt) -> None:
        claim, s = at.claim, self.settings
        if not claim.loop or not claim.task_id or not claim.commit:
            self._fail(at, VerificationVerdict.BAD_CLAIM, "claim without loop, task or commit")
            return
        if s.remote:
            fetch(s.repo, s.remote)
        commit, main_sha = resolve_commits(s.repo, claim.commit, main_ref(s.main, s.remote))
        if commit is None:
            self._fail(at, VerificationVerdict.BAD_CLAIM, f"unknown commit {claim.commit!r}")
            return
        if main_sha is None:
            self._fail(at, VerificationVerdict.BAD_CLAIM, f"no {s.main!r} branch to verify on")
            return
        job_id = f"verify-{derived_id(at.cause.id, commit)}"
        self._publish(
            VerificationStarted(
                source=self.source, job_id=job_id, **at.verification("started", commit)
            )
        )
        with scratch(s.repo, main_sha, pool="main") as main_root:
            criteria, why = self._criteria(main_root, claim.loop, claim.task_id)
            if not criteria:
                self._fail(at, VerificationVerdict.BAD_CLAIM, why, commit=commit)
                return
        scripts = [c for c in criteria if isinstance(c.check, ScriptCheck)]
        commands = [c.check.run for c in scripts if isinstance(c.check, ScriptCheck)]
        protected = protected_files(tree_files(s.repo, main_sha), s.protected, commands)
        flagged = flagged_files(changes(s.repo, main_sha, commit), protected)
        tamper_ok = s.policy == TamperPolicy.ALLOW or "tamper" in at.approvals
        if flagged and s.policy == TamperPolicy.REJECT:
            reason = f"the claim changes its own checks or spec: {', '.join(flagged)}"
            self._fail(at, VerificationVerdict.TAMPERED, reason, commit=commit, flagged=flagged)
            return
        # The checks run with main's version of every protected file, so a tampered check
        # cannot pass itself however its command is spelled; once a person approved the
        # flagged files (or the policy allows tampering) those run as the agent wrote them.
        overlay = sorted(protected - set(flagged)) if tamper_ok else sorted(protected)
        shadows = [] if tamper_ok else [f for f in flagged if f not in protected]
        try:
            results = self._run_scripts(scripts, commit, job_id, main_sha, overlay, shadows)
        except JobError as exc:  # retried by the runner already: a typed failure, not a hang
            reason = f"the verification job failed: {exc}"
            self._fail(
                at, VerificationVerdict.CHECKS_FAILED, reason, commit=commit, flagged=flagged
            )
            return
        results += self._judge_natural(criteria, results, main_sha, commit, at.approvals)
        ordered = _in_order(criteria, results)
        failed = [r for r in ordered if r.passed is False]
        if failed:
            reason = "failed: " + "; ".join(r.criterion for r in failed)
            self._fail(
                at,
                VerificationVerdict.CHECKS_FAILED,
                reason,
                commit=commit,
                flagged=flagged,
                criteria=ordered,
            )
            return
        if flagged and not tamper_ok:
            question = (
                f"{claim.loop}/{claim.task_id} passes its checks but its commit {commit[:12]} "
                f"changes files its checks depend on: {', '.join(flagged)}. Approve to merge?"
            )
            self._escalate(at, EscalationKind.APPROVAL, question, commit, flagged, ordered)
            return
        unjudged = [r for r in ordered if r.passed is None]
        if unjudged:
            question = (
                f"{claim.loop}/{claim.task_id} (commit {commit[:12]}) needs a sign-off: "
                + "; ".join(r.criterion for r in unjudged)
            )
            self._escalate(at, EscalationKind.SIGNOFF, question, commit, flagged, ordered)
            return
        self._publish(
            VerificationPassed(
                source=self.source,
                criteria=ordered,
                flagged_files=flagged,
                **at.verification("passed", commit),
            )
        )

    def _criteria(self, root: Path, loop: str, task_id: str) -> tuple[list[Criterion], str]:
        return load_criteria(self.loader, root, loop, task_id, self.settings.default_check)

    def _run_scripts(
        self,
        scripts: Sequence[Criterion],
        commit: str,
        job_id: str,
        main_sha: str,
        overlay: list[str],
        shadows: list[str],
    ) -> list[CriterionResult]:
        if not scripts:
            return []
        s = self.settings
        checks = [
            {"criterion": c.criterion, "run": c.check.run, "timeout_s": c.check.timeout_s}
            for c in scripts
            if isinstance(c.check, ScriptCheck)
        ]
        kwargs: dict[str, Any] = {
            "repo": str(s.repo),
            "commit": commit,
            "checks": checks,
            "default_timeout_s": s.check_timeout_s,
            "tail_bytes": s.tail_bytes,
            "remote_url": remote_url(s.repo, s.remote) if s.remote else None,
            "overlay_rev": main_sha,
            "overlay": overlay,
            "overlay_remove": shadows,
        }
        budget = sum(float(c["timeout_s"] or s.check_timeout_s) for c in checks) + 60
        started = time.monotonic()
        try:
            payload = self.jobs.run(VERIFY_JOB, kwargs, job_id=job_id, timeout_s=budget)
        finally:
            self._spent("verify", job_id, started)
        return parse_results(payload)

    def _spent(self, line: str, call_id: str, started: float) -> None:
        """Count one verification run or judge call, with its wall time, against the
        project's and the day's budgets on its own line (`bus.spend`)."""
        if self.spend is not None:
            wall = time.monotonic() - started
            self.spend.record(
                [PROJECT, DAY], utcnow(), line=line, call_id=f"{line}:{call_id}", wall_s=wall
            )

    def _judge_natural(
        self,
        criteria: Sequence[Criterion],
        scripts: Sequence[CriterionResult],
        main_sha: str,
        commit: str,
        approvals: frozenset[str],
    ) -> list[CriterionResult]:
        natural = [c for c in criteria if not isinstance(c.check, ScriptCheck)]
        out: list[CriterionResult] = []
        diff = diff_text(self.settings.repo, main_sha, commit) if natural and self.judge else ""
        for c in natural:
            if "signoff" in approvals:
                out.append(_natural(c, True, "signed off by a person", "human"))
            elif self.judge is None:
                out.append(_natural(c, None, "no model configured to judge this", None))
            else:
                started = time.monotonic()
                try:
                    verdict = self.judge.judge(c, diff, scripts)
                except JudgeError as exc:
                    out.append(_natural(c, None, f"judge gave no verdict: {exc}", None))
                else:
                    out.append(_natural(c, verdict.passed, verdict.reason, self.judge.name))
                finally:
                    self._spent("judge", f"{commit}:{c.criterion}", started)
        return out

    # ------------------------------------------------------------------ escalations

    def _escalate(
        self,
        at: _Attempt,
        kind: EscalationKind,
        question: str,
        commit: str,
        flagged: list[str],
        criteria: list[CriterionResult],
    ) -> None:
        eid = derived_escalation_id(at.cause.id, kind.value)
        record = {"claim": at.claim.model_dump_json(), "kind": kind.value}
        record["approvals"] = json.dumps(sorted(at.approvals))
        self.store.set(f"escalation:{eid}", json.dumps(record))
        self._publish(
            EscalationRaised(
                id=derived_id(at.cause.id, "escalation", kind.value),
                source=self.source,
                escalation_id=eid,
                kind=kind,
                severity=Severity.MEDIUM,
                question=question,
                task_id=at.claim.task_id,
                options=[Decision.APPROVE.value, Decision.REJECT.value],
                **at.env(),
            )
        )
        self._fail(
            at,
            VerificationVerdict.NEEDS_HUMAN,
            f"waiting on a person ({kind.value}, escalation {eid})",
            commit=commit,
            flagged=flagged,
            criteria=criteria,
            escalation_id=eid,
        )

    def _answered(self, answer: EscalationAnswered) -> None:
        raw = self.store.get(f"escalation:{answer.escalation_id}")
        if raw is None:
            return  # not ours, or already resolved
        decision = answer.decision
        word = answer.answer.strip().lower().rstrip(".!")
        if decision is None and word in _APPROVE_WORDS:
            decision = Decision.APPROVE
        elif decision is None and word in _REJECT_WORDS:
            decision = Decision.REJECT
        if decision not in (Decision.APPROVE, Decision.REJECT):
            return  # not a decision the gate can act on; the escalation stays open
        record = json.loads(raw)
        claim = TaskClaimed.model_validate_json(record["claim"])
        kind = EscalationKind(record["kind"])
        approvals = frozenset(json.loads(record["approvals"]))
        at = _Attempt(claim, answer, approvals)
        if decision == Decision.APPROVE:
            grant = "tamper" if kind == EscalationKind.APPROVAL else "signoff"
            self._verify(_Attempt(claim, answer, approvals | {grant}))
        else:
            verdict = (
                VerificationVerdict.TAMPERED
                if kind == EscalationKind.APPROVAL
                else VerificationVerdict.CHECKS_FAILED
            )
            reason = f"rejected by {answer.by}: {answer.answer}".strip()
            self._fail(at, verdict, reason, escalation_id=answer.escalation_id)
        self._publish(
            EscalationDelivered(
                id=derived_id(answer.id, "delivered"),
                source=self.source,
                escalation_id=answer.escalation_id,
                task_id=claim.task_id,
                **at.env(),
            )
        )
        self.store.delete(f"escalation:{answer.escalation_id}")

    # ------------------------------------------------------------------ publishing

    def _fail(
        self,
        at: _Attempt,
        verdict: VerificationVerdict,
        reason: str,
        *,
        commit: str | None = None,
        flagged: list[str] | None = None,
        criteria: list[CriterionResult] | None = None,
        escalation_id: str | None = None,
    ) -> None:
        self._publish(
            VerificationFailed(
                source=self.source,
                verdict=verdict,
                reason=reason,
                criteria=criteria or [],
                flagged_files=flagged or [],
                escalation_id=escalation_id,
                **at.verification("failed", commit or at.claim.commit),
            )
        )

    def _publish(self, event: Event) -> None:
        log.info("gate: %s %s", event.type, getattr(event, "task_id", ""))
        self.bus.publish(event)


def _natural(c: Criterion, passed: bool | None, why: str, by: str | None) -> CriterionResult:
    return CriterionResult(
        criterion=c.criterion, kind="natural", passed=passed, output_tail=why, judged_by=by
    )


def _in_order(
    criteria: Sequence[Criterion], results: Sequence[CriterionResult]
) -> list[CriterionResult]:
    pool = list(results)
    ordered = []
    for c in criteria:
        for i, r in enumerate(pool):
            if r.criterion == c.criterion:
                ordered.append(pool.pop(i))
                break
    return ordered + pool
