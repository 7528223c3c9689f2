"""Mutation check: does replay catch behaviour changes, and only those?

    python bench/mutation_check.py [--only NAME ...] [--json] [--snapshots]

Copies the package (``fastagent/``, ``projections/``) and ``replays/`` to a scratch
directory, then for each mutation in :data:`MUTATIONS`: applies it (one exact text
replacement in one file), replays every recording in the scratch ``replays/``
against the mutated code in a fresh interpreter, and puts the file back.

A mutation is either a **behaviour change** (``kind="change"``: a guard, a target,
a prompt, a timeout, decision order, arithmetic, ...), which replay should flag
at the event where the behaviour differs, or a change that **should not matter**
(``kind="quiet"``: a field added with its default, a refactor, a comment), which
should raise no alarm.  ``--snapshots`` also runs ``tests/test_replays.py`` (the
snapshot tests) in the scratch copy.

The report gives, per mutation: how many recordings flagged it, the first one
with its position and what each side holds there; and the totals: changes
flagged, changes missed (with the reason when it is known), false alarms.  A
mutation whose text no longer occurs exactly once -- in its file, or in the one
file under ``fastagent/`` it moved to -- is reported ``stale``.
Exit status: 0 when every change is flagged and no quiet one is, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # path from the repository root
    old: str
    new: str
    kind: str = "change"  # change | quiet
    known_gap: str = ""  # why replay cannot see it today, if known


C = "fastagent/core.py"
E = "fastagent/events.py"
BANK = "fastagent/examples/banking.py"
CLINIC = "fastagent/examples/healthcare.py"
SHOP = "fastagent/examples/retail.py"
AGENTS = "fastagent/agents.py"

MUTATIONS: tuple[Mutation, ...] = (
    # --- the core: arithmetic, limits, texts, order -----------------------------------
    Mutation(
        "truncate: heard ms rounded up",
        C,
        "return max(0, min(self.played_us(at) - offset_us, sent_us)) // 1000",
        "return max(0, min(self.played_us(at) - offset_us, sent_us)) // 1000 + 1",
    ),
    Mutation(
        "barge-in ignores the playback speed",
        C,
        "            clock.speed = self.playback_speed\n",
        "            clock.speed = 1.0\n",
    ),
    Mutation("calls per response: 32 -> 31", C, "< 32:", "< 31:"),
    Mutation(
        "DTMF message text",
        C,
        'text=f"[The caller pressed keys: {e.digits}]"',
        'text=f"[Keys pressed: {e.digits}]"',
    ),
    Mutation(
        "send_dtmf refuses '#'",
        C,
        '_DTMF = re.compile(r"[0-9*#]{1,20}")',
        '_DTMF = re.compile(r"[0-9*]{1,20}")',
    ),
    Mutation(
        "transfer target: agent's before the operator's override",
        C,
        "return self.config_transfer or self.agent.transfer_target",
        "return self.agent.transfer_target or self.config_transfer",
    ),
    Mutation(
        "transfer without target: error text",
        C,
        '"no transfer target configured"',
        '"transfer is not available"',
    ),
    Mutation("unknown tool: skip reason", C, 'reason="unknown tool",', 'reason="no such tool",'),
    Mutation(
        "grace expiry: outcome",
        C,
        '"caller did not return within {e.seconds:g} s", "dropped")',
        '"caller did not return within {e.seconds:g} s", "abandoned")',
    ),
    Mutation(
        "model drop: calls of the lost response still run",
        C,
        "            # The response in progress is gone with the socket: none of its calls run.\n"
        "            for call in self.calls_in_response:",
        "            # The response in progress is gone with the socket: none of its calls run.\n"
        "            for call in []:",
    ),
    Mutation(
        "model reconnect: owed response reason",
        C,
        '"resume after model reconnect"',
        '"model reconnected"',
    ),
    Mutation(
        "interrupted response: skip reason",
        C,
        'why = "response interrupted by the caller"',
        'why = "interrupted"',
    ),
    Mutation(
        "calls of an audible response are not held",
        C,
        "if audible and not interrupted and (calls or self.control[0]):",
        "if False and audible and not interrupted and (calls or self.control[0]):",
    ),
    Mutation(
        "hang-up while tools run: log closed at once",
        C,
        "        if self.in_flight:\n",
        "        if False:\n",
    ),
    Mutation(
        "failed tool: error told under another key",
        C,
        'outcome = e.output if e.ok else {"ok": False, "error": e.error}',
        'outcome = e.output if e.ok else {"ok": False, "reason": e.error}',
    ),
    Mutation(
        "tool output JSON keys unsorted",
        C,
        "text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)",
        "text = payload if isinstance(payload, str) else json.dumps(payload)",
    ),
    Mutation(
        "decision order: response.create before the tool outputs",
        C,
        "        for model_call_id, text in self.queued:\n",
        "        queued, self.queued = list(self.queued), []\n"
        "        self._request(reason)\n"
        "        for model_call_id, text in queued:\n",
    ),
    Mutation(
        "greeting although greet=false",
        C,
        "if self.agent is not None and self.greet:",
        "if self.agent is not None:",
    ),
    Mutation(
        "session params not sent",
        C,
        "if self.agent is not None and self.agent.session_params:",
        "if False:",
    ),
    # --- timing and retry rules (CallPolicy) ------------------------------------------
    Mutation("grace 30 s -> 20 s", C, "    grace_s=30.0, tool_", "    grace_s=20.0, tool_"),
    Mutation(
        "tool timeout 10 s -> 15 s", C, "tool_timeout_s=10.0, model_", "tool_timeout_s=15.0, model_"
    ),
    Mutation("model retries 5 -> 3", C, "model_retries=5, history_", "model_retries=3, history_"),
    Mutation(
        "resume history window 24 -> 12", C, "history_items=24, model_", "history_items=12, model_"
    ),
    Mutation(
        "model answer timeout 10 s -> 5 s", C, "model_timeout_s=10.0\n)", "model_timeout_s=5.0\n)"
    ),
    # --- example agents: guards, targets, slots, prompts, tools -----------------------
    Mutation(
        "banking: 3 -> 4 failed checks before locking", BANK, "MAX_ATTEMPTS = 3", "MAX_ATTEMPTS = 4"
    ),
    Mutation(
        "banking: customer number pattern",
        BANK,
        'pattern=r"\\d{6}", sensitive=True)',
        'pattern=r"\\d{5,6}", sensitive=True)',
    ),
    Mutation(
        "banking: the order's result is not checked",
        BANK,
        'Go("done", when=ordered, guard="ordered"),',
        'Go("done", guard="ordered"),',
    ),
    Mutation(
        "banking: instructions wording",
        BANK,
        "Be brief and warm: this is a phone call.",
        "Be brief, precise and warm: this is a phone call.",
    ),
    Mutation(
        "banking: DTMF session params",
        BANK,
        'session_params={"sendDTMF": True},',
        'session_params={"sendDTMF": True, "dtmfCollectInterDigitTimeoutMS": 3000},',
    ),
    Mutation(
        "healthcare: taken slot goes back to want",
        CLINIC,
        'Go("choose", guard="taken")',
        'Go("want", guard="taken")',
    ),
    Mutation(
        "healthcare: greeting text",
        CLINIC,
        'greeting="Say: Riverside Clinic, how can I help?"',
        'greeting="Say: Riverside Clinic, good day, how can I help?"',
    ),
    Mutation(
        "retail: parcel found guard",
        SHOP,
        'after=(Go("told", when=found, guard="found"), Go("ask", guard="not found")),',
        'after=(Go("told", guard="found"),),',
    ),
    Mutation(
        "retail: not returnable goes to identify",
        SHOP,
        'Go("choose_item", guard="not returnable"),',
        'Go("identify", guard="not returnable"),',
    ),
    Mutation(
        "retail: a step's tool description",
        SHOP,
        '"The caller gave the order number and the postcode.",\n'
        '                    slots=("order_number", "postal_code"),\n'
        '                    go=(Go("tracking"),),',
        '"The caller gave the order number and the delivery postcode.",\n'
        '                    slots=("order_number", "postal_code"),\n'
        '                    go=(Go("tracking"),),',
    ),
    Mutation(
        "send_dtmf: a tool's parameter schema",
        C,
        '"properties": {"digits": {"type": "string"}},',
        '"properties": {"digits": {"type": "string", "maxLength": 20}},',
    ),
    Mutation(
        "default agent: send_dtmf no longer offered",
        AGENTS,
        "    send_dtmf=True,",
        "    send_dtmf=False,",
    ),
    # --- a fresh model session's history (ModelConfigured.history) ----------------------
    Mutation(
        "history: the oldest recent turn folded into the summary",
        C,
        "    recent = pairs[max(0, len(pairs) - items) :] if items else []\n",
        "    recent = pairs[max(0, len(pairs) - items) + 1 :] if items else []\n",
    ),
    Mutation(
        "history: the summary's heading",
        C,
        '"Earlier in this call:\\n"',
        '"Earlier in the call:\\n"',
    ),
    Mutation(
        "history: bot words the caller never heard kept",
        C,
        'if e.role == "assistant" and e.item_id in self.unheard:',
        'if e.role == "assistant" and e.item_id in self.unheard[:0]:',
    ),
    # --- should not matter ------------------------------------------------------------
    Mutation(
        "a field with its default added to a decision",
        E,
        "class FsaFinished(Decision, frozen=True, kw_only=True):\n    fsa: str\n",
        "class FsaFinished(Decision, frozen=True, kw_only=True):\n    fsa: str\n"
        '    note: str = ""\n',
        kind="quiet",
    ),
    Mutation(
        "a field with its default added to an input",
        E,
        "    role: Role\n    item_id: str\n    text: str\n",
        '    role: Role\n    item_id: str\n    text: str\n    language: str = ""\n',
        kind="quiet",
    ),
    Mutation(
        "a rule with its default added to the call policy",
        E,
        "    history_items: int = 24",
        "    history_items: int = 24\n    max_call_s: float = 0.0",
        kind="quiet",
    ),
    Mutation(
        "a new, unused decision type",
        E,
        "class CallEnded(Decision, frozen=True, kw_only=True):",
        "class NoteTaken(Decision, frozen=True, kw_only=True):\n    text: str = ''\n\n\n"
        "class CallEnded(Decision, frozen=True, kw_only=True):",
        kind="quiet",
    ),
    Mutation(
        "refactor: a local renamed",
        C,
        "            heard = clock.heard_ms(pb.offset_us, pb.sent_us, e.at)\n"
        "            self._emit(\n"
        '                ev.PlaybackStopped, stream_id=pb.stream_id, reason="barge_in", '
        "played_ms=heard\n",
        "            cut = clock.heard_ms(pb.offset_us, pb.sent_us, e.at)\n"
        "            self._emit(\n"
        '                ev.PlaybackStopped, stream_id=pb.stream_id, reason="barge_in", '
        "played_ms=cut\n",
        kind="quiet",
    ),
    Mutation(
        "refactor: handler table order",
        C,
        "    ev.SessionInitiated: Engine._on_initiated,\n"
        "    ev.SessionResumed: Engine._on_resumed,",
        "    ev.SessionResumed: Engine._on_resumed,\n"
        "    ev.SessionInitiated: Engine._on_initiated,",
        kind="quiet",
    ),
    Mutation(
        "a comment and a docstring",
        C,
        '"""Decide what ``event`` calls for.  Decisions are numbered after it."""',
        '"""Decide what ``event`` calls for (decisions numbered after it)."""  # reworded',
        kind="quiet",
    ),
)

_REPLAY_ALL = r"""
import json, sys
from pathlib import Path
from fastagent.replay import read_recording, replay
out = {}
for p in sorted(Path("replays").glob("*.jsonl")):
    try:
        r = replay(read_recording(p))
    except Exception as exc:  # the mutated code may not even load a recording
        out[p.stem] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        continue
    d = r.divergence
    out[p.stem] = None if d is None else {
        "position": d.position, "recorded": d.recorded_holds[:90], "now": d.new_holds[:90],
    }
print(json.dumps(out))
"""


def _replay_all(scratch: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _REPLAY_ALL],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"*": {"error": f"the mutated code does not run: {last[:200]}"}}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _snapshots(scratch: Path) -> bool:
    """Whether tests/test_replays.py fails in the scratch copy."""
    env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "tests/test_replays.py",
        ],  # fmt: skip
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode != 0


def _locate(scratch: Path, m: Mutation) -> Path | None:
    """The file to mutate: ``m.file``, or -- when code moved -- the one file under
    ``fastagent/`` with the same name or in the same package that holds ``m.old``."""
    path = scratch / m.file
    if path.exists() and m.old in path.read_text():
        return path
    name = Path(m.file).name
    pool = [p for p in (scratch / "fastagent").rglob("*.py") if p.name == name]
    if name == "__init__.py" or not pool:
        pool = list((scratch / "fastagent").rglob("*.py"))
    found = [p for p in pool if m.old in p.read_text()]
    return found[0] if len(found) == 1 else (path if path.exists() else None)


def run(mutations: tuple[Mutation, ...], snapshots: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="fastagent-mutants-") as tmp:
        scratch = Path(tmp)
        for part in ("fastagent", "projections", "replays", "tests"):
            shutil.copytree(
                ROOT / part, scratch / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        for name in ("pyproject.toml", "conftest.py"):
            if (ROOT / name).exists():
                shutil.copy(ROOT / name, scratch / name)
        base = _replay_all(scratch)
        broken = sorted(k for k, v in base.items() if v is not None)
        if broken:
            raise SystemExit(f"recordings that do not replay before any mutation: {broken}")
        for m in mutations:
            path = _locate(scratch, m)
            text = path.read_text() if path is not None else ""
            where = str(path.relative_to(scratch)) if path is not None else m.file
            row: dict[str, object] = {"name": m.name, "kind": m.kind, "file": where}
            if text.count(m.old) != 1:
                row["result"] = "stale"
                rows.append(row)
                continue
            path.write_text(text.replace(m.old, m.new))
            try:
                started = time.perf_counter()
                results = _replay_all(scratch)
                row["seconds"] = round(time.perf_counter() - started, 1)
                flagged = {k: v for k, v in results.items() if v is not None}
                row["flagged_by"] = len(flagged)
                if flagged:
                    first = min(flagged)
                    row["first"] = {"recording": first, **flagged[first]}  # type: ignore[dict-item]
                if snapshots:
                    row["snapshot_tests_fail"] = _snapshots(scratch)
            finally:
                path.write_text(text)
            alarm = bool(row["flagged_by"])
            if m.kind == "change":
                row["result"] = "flagged" if alarm else "missed"
                if m.known_gap and not alarm:
                    row["why"] = m.known_gap
            else:
                row["result"] = "false alarm" if alarm else "quiet"
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="mutation names")
    parser.add_argument("--json", action="store_true", help="machine-readable rows")
    parser.add_argument("--snapshots", action="store_true", help="also run the snapshot tests")
    args = parser.parse_args(argv)
    chosen = tuple(m for m in MUTATIONS if not args.only or m.name in args.only)
    started = time.perf_counter()
    rows = run(chosen, args.snapshots)
    took = time.perf_counter() - started
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            line = f"{r['result']:<12} {r['name']}"
            if r.get("flagged_by"):
                first = r["first"]
                assert isinstance(first, dict)
                line += (
                    f"  [{r['flagged_by']} recording(s); first {first['recording']} at "
                    f"#{first.get('position', '?')}: {first.get('recorded', first.get('error'))}]"
                )
            if "why" in r:
                line += f"  ({r['why']})"
            if "snapshot_tests_fail" in r:
                line += f"  snapshots {'fail' if r['snapshot_tests_fail'] else 'pass'}"
            print(line)
    changes = [r for r in rows if r["kind"] == "change"]
    quiet = [r for r in rows if r["kind"] == "quiet"]
    flagged = sum(r["result"] == "flagged" for r in changes)
    missed = [r["name"] for r in changes if r["result"] == "missed"]
    alarms = [r["name"] for r in quiet if r["result"] == "false alarm"]
    stale = [r["name"] for r in rows if r["result"] == "stale"]
    print(
        f"\n{flagged} of {len(changes)} behaviour changes flagged; missed: {missed or 'none'}; "
        f"{len(alarms)} false alarms of {len(quiet)} changes that should not matter"
        + (f"; {alarms}" if alarms else "")
        + (f"; stale (code moved): {stale}" if stale else "")
        + f"; {len(list((ROOT / 'replays').glob('*.jsonl')))} recordings, {took:.0f} s",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0 if not missed and not alarms and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
