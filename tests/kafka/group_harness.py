"""Member processes of every Kafka client family, and the checks of the seed's group
scenario over what they printed (``kafka_member.py``'s JSON lines)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.integration.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).parent / "node"
# what the group tests' clusters run with: Kafka's rules, shorter delays (the members ask
# for 3 s sessions; Kafka's own minimum is 6 s)
GROUP_COORDINATOR_ARGS = [
    "--group-initial-rebalance-delay-ms",
    "300",
    "--group-min-session-timeout-ms",
    "1000",
    "--group-consumer-session-timeout-ms",
    "3000",
]


def member_argv(client: str, cluster: Cluster, topic: str, group: str, *extra: str) -> list[str]:
    """The command line of one member of ``client``'s family (skips when not installed)."""
    if client == "kcat":
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        if kcat is None:
            pytest.skip("kcat is not installed (apt-get install kafkacat; make system-deps)")
        # not quiet (-q): kcat reports each assignment and revocation on stderr
        return [
            kcat, "-b", cluster.bootstrap, "-G", group, topic, "-u",
            "-f", '{"k":"%k","v":"%s","p":%p,"o":%o}\\n',
            "-X", "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=300",
            "-X", "auto.commit.interval.ms=200", "-X", "auto.offset.reset=earliest",
        ]  # fmt: skip
    if client == "kafkajs":
        node = shutil.which("node")
        if node is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
            pytest.skip("node or kafkajs missing (scripts/system-deps/61-kafkajs.sh)")
        return [node, str(NODE_DIR / "kafkajs_member.js"), cluster.bootstrap, topic, group]
    return [
        sys.executable, "-m", "tests.kafka.kafka_member", client, cluster.bootstrap, topic,
        group, *extra,
    ]  # fmt: skip


# kcat's rebalance callback on stderr: "% Group G rebalanced (memberid M): assigned: t [0], t [1]"
KCAT_REBALANCE = re.compile(r"rebalanced \(memberid [^)]*\): (assigned|revoked): (.*)$")
KCAT_PARTITION = re.compile(r"(\S+) \[(\d+)\]")


def kcat_assignment(stderr: str) -> list[list[Any]]:
    """kcat's latest assignment from its stderr (empty after a revocation)."""
    latest: list[list[Any]] = []
    for line in stderr.splitlines():
        found = KCAT_REBALANCE.search(line)
        if found is not None:
            owned = [[t, int(p)] for t, p in KCAT_PARTITION.findall(found.group(2))]
            latest = owned if found.group(1) == "assigned" else []
    return latest


@dataclass
class KafkaMember:
    """One member process; its stdout (JSON lines) goes to a file read on demand."""

    name: str
    path: Path
    process: subprocess.Popen[bytes]
    lines: list[dict[str, Any]] = field(default_factory=list)
    kcat: bool = False  # assignments on stderr, in kcat's words

    @classmethod
    def start(cls, argv: list[str], path: Path) -> KafkaMember:
        with path.open("wb") as out, path.with_suffix(".err").open("wb") as err:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)
        return cls(path.stem, path, process, kcat=Path(argv[0]).name in ("kcat", "kafkacat"))

    def read(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        lines = []
        for raw in complete.splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:  # kcat's warnings on stdout
                continue
        self.lines = lines
        return lines

    def processed(self) -> list[dict[str, Any]]:
        return [line for line in self.read() if "o" in line]

    def assigned(self) -> list[list[Any]]:
        """Its latest assignment (empty until it has one)."""
        if self.kcat:
            return kcat_assignment(self.path.with_suffix(".err").read_text(errors="replace"))
        found = [line["assigned"] for line in self.read() if "assigned" in line]
        return found[-1] if found else []

    def committed(self) -> int:
        return max([line["committed"] for line in self.read() if "committed" in line] or [0])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"member {self.name} did not stop; {self.stderr()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def stderr(self) -> str:
        return self.path.with_suffix(".err").read_text(errors="replace")[-3000:]


def produce_keyed(cluster: Cluster, topic: str, count: int, keys: int, start: int = 0) -> None:
    """Values ``key:n``, n the message's sequence number within its key (Conveyor's own
    producer: murmur2 like Kafka's, so a key stays on its partition)."""
    with conveyor.Producer(cluster.url) as producer:
        for i in range(start, start + count):
            key = f"key-{i % keys}"
            producer.send(topic, f"{key}:{i // keys}", key=key)
        producer.flush()


def distinct(members: list[KafkaMember]) -> set[tuple[int, int]]:
    return {(line["p"], line["o"]) for m in members for line in m.processed()}


def check_key_order(lines: list[dict[str, Any]], resumes: bool = False) -> None:
    """Per key, the first time each value is seen comes in sequence order (a redelivered
    message may repeat, but a key never skips ahead or goes back past a new one). With
    ``resumes`` (one member's lines) a key may start anywhere: a member that takes a
    partition over resumes it at the offset its previous owner committed."""
    seen: dict[str, int] = {}
    for line in lines:
        key, n = line["v"].rsplit(":", 1)
        if resumes and key not in seen:
            seen[key] = int(n)
        elif int(n) > seen.get(key, -1):
            assert int(n) == seen.get(key, -1) + 1, f"{key}: {n} after {seen.get(key)}"
            seen[key] = int(n)


def merged_by_time(members: list[KafkaMember]) -> list[dict[str, Any]]:
    lines = [line for m in members for line in m.processed()]
    return sorted(lines, key=lambda line: line["t"])


def check_duplicates_are_the_victims_tail(
    members: list[KafkaMember], victim: KafkaMember, exact_tail: bool
) -> int:
    """Every message delivered twice was processed by the killed member, and per partition
    what was redelivered is a suffix of what it processed there (its uncommitted tail).
    With ``exact_tail`` (members that print their commits) the count is bounded by what it
    processed after its last commit. Returns the number of duplicates."""
    counts = Counter((line["p"], line["o"]) for m in members for line in m.processed())
    duplicates = {po for po, n in counts.items() if n > 1}
    mine: dict[int, list[int]] = defaultdict(list)
    for line in victim.processed():
        mine[line["p"]].append(line["o"])
    assert all(o in mine[p] for p, o in duplicates), sorted(duplicates)[:10]
    for partition, offsets in mine.items():
        again = [o for o in offsets if (partition, o) in duplicates]
        if again:
            assert again == offsets[len(offsets) - len(again) :], (partition, again[:5])
    extra = sum(counts[po] - 1 for po in duplicates)
    if exact_tail:
        uncommitted = len(victim.processed()) - victim.committed()
        assert extra <= uncommitted, (extra, uncommitted)
    return extra
