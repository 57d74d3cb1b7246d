"""The shadow challenger (serve.shadow): the version behind a second registry alias (usually `challenger`)
also answers a sampled share of live requests, after the champion's answer was produced and off the
request path, and the two answers are compared.

- ShadowRunner: a bounded queue and one worker thread. A sampled request is offered to it without
  waiting; when the queue is full the sample is dropped and counted, never the request slowed. A
  challenger that raises is counted and logged, never seen by a client.
- ShadowWatcher: follows the alias as the ChampionWatcher follows `champion` (a new challenger is loaded,
  warmed up and shadowed from then on; no alias, or the champion's own version: nothing shadowed), and
  writes the challenger's figures as tags on its registry version at most once per poll, so the flow,
  `tunegate shadow-report` and a person read them wherever the service runs.

Several replicas of the service shadow the same challenger: each writes its figures to a tag of its own,
`shadow.<replica id>` (hostname-pid unless the caller names the replica), and the version's figures are
their sum (components/lifecycle/gate.py, shadow_figures), so no replica overwrites another's.

Agreement is counted per text: a classifier agrees when both give the same label; a token classifier
when both find the same set of entities (type and character offsets). Disagreements go, one JSON line
each, to serve.shadow_log for a person to read, screened for personal data as the prediction log is
(serve.log_pii: redacted, left out, or as sent).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.lifecycle.gate import SHADOW_FIGURES_TAG, SHADOW_REPLICA_TAG_PREFIX, shadow_figures
from components.serving.background import StoppableThread
from components.serving.prediction_log import LogScreen, redacted_prediction

logger = logging.getLogger("tunegate.shadow")

OUTCOMES = ("agree", "disagree", "error", "dropped")
SHADOW_BATCH_TEXTS = 64  # queued samples merged into one challenger call, up to this many texts
SHADOW_NICENESS = 10  # the shadow's threads run at this nice value (0 = as the request path; 19 = lowest)
# The registry tags the service writes on the shadowed version (read by the gate and shadow-report).
TAG_REQUESTS, TAG_AGREED, TAG_AGREEMENT = "shadow_requests", "shadow_agreed", "shadow_agreement"
TAG_ERRORS, TAG_DROPPED = "shadow_errors", "shadow_dropped"
TAG_CHAMPION, TAG_UPDATED = "shadow_champion", "shadow_updated"
TAG_FIGURES = SHADOW_FIGURES_TAG  # the single figures tag of services before replica ids: still read, summed


def default_replica_id() -> str:
    """Stable for the life of this process and distinct from any other process': hostname-pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def replica_figures_tag(replica_id: str) -> str:
    """The tag a replica writes its figures to; an MLflow tag key holds only word characters, '.' and '-'."""
    safe = re.sub(r"[^\w.\-]", "-", replica_id.strip())[:200]
    if not safe.strip(".-"):
        raise ValueError(f"replica id {replica_id!r} has nothing a registry tag can name")
    return SHADOW_REPLICA_TAG_PREFIX + safe


def answer_key(prediction: dict[str, Any]) -> Any:
    """What two answers must share to agree: the label, or the set of (type, start, end) entities."""
    if "label" in prediction:
        return str(prediction["label"])
    return frozenset((str(e.get("type")), e.get("start"), e.get("end")) for e in prediction.get("entities", ()))


def agrees(champion: dict[str, Any], challenger: dict[str, Any]) -> bool:
    return answer_key(champion) == answer_key(challenger)


@dataclass(frozen=True)
class ShadowStats:
    """The figures of one shadowed version (since it was loaded, plus what its tags held then)."""

    version: str | None
    agreed: int = 0
    disagreed: int = 0
    errors: int = 0
    dropped: int = 0

    @property
    def requests(self) -> int:  # texts both versions answered
        return self.agreed + self.disagreed

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.requests if self.requests else None

    def figures_tag(self, replica_id: str | None = None) -> dict[str, str]:
        """The figures as one JSON tag: the replica's own (`shadow.<replica id>`), or with no replica id the
        single `shadow` tag (one writer only). MLflow sets one tag per call: a reader between two calls would
        pair new requests with old agreements, so the gate reads only these JSON tags."""
        figures = {"requests": self.requests, "agreed": self.agreed, "errors": self.errors, "dropped": self.dropped}
        key = TAG_FIGURES if replica_id is None else replica_figures_tag(replica_id)
        return {key: json.dumps(figures)}

    def summary_tags(self, champion: str | None) -> dict[str, str]:
        """The figures one per tag, for people and the MLflow UI (the gate reads the JSON tags)."""
        return {TAG_REQUESTS: str(self.requests), TAG_AGREED: str(self.agreed),
                TAG_AGREEMENT: "" if self.agreement is None else f"{self.agreement:.6f}",
                TAG_ERRORS: str(self.errors), TAG_DROPPED: str(self.dropped), TAG_CHAMPION: champion or "",
                TAG_UPDATED: datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def as_tags(self, champion: str | None, replica_id: str | None = None) -> dict[str, str]:
        return {**self.summary_tags(champion), **self.figures_tag(replica_id)}  # the figures' JSON written last

    @classmethod
    def from_tags(cls, version: str | None, tags: dict[str, str]) -> "ShadowStats":
        """The version's figures: every replica's, summed."""
        figures = shadow_figures(tags)
        return cls(version, figures["agreed"], figures["requests"] - figures["agreed"], figures["errors"],
                   figures["dropped"])

    @classmethod
    def of_replica(cls, version: str | None, tags: dict[str, str], replica_id: str) -> "ShadowStats":
        """What one replica wrote (a restarted replica with the same id counts on from there)."""
        own = replica_figures_tag(replica_id)
        return cls.from_tags(version, {own: tags[own]} if own in tags else {})


@dataclass
class _Sample:
    champion_version: str | None
    texts: list[str]
    predictions: list[dict[str, Any]]


class ShadowRunner(StoppableThread):
    """Runs the shadowed model on sampled requests in a worker thread of its own.

    `offer` is all the request path pays: a random draw and a put_nowait."""

    def __init__(self, alias: str, sample_rate: float, *, queue_size: int = 64, log_path: Path | None = None,
                 seed: int | None = None, replica_id: str | None = None, screen: LogScreen | None = None) -> None:
        """replica_id: names this service process among the replicas shadowing the same challenger (each
        writes its own figures tag); hostname-pid when not given. screen: serve.log_pii for the disagreements
        file (None: texts as sent; create_app gives the service's own, shared with its prediction log)."""
        super().__init__("tunegate-shadow")
        self.alias = alias
        self.replica_id = replica_id or default_replica_id()
        replica_figures_tag(self.replica_id)  # an id no tag can name is refused at start, not at the first write
        self.sample_rate = sample_rate
        self.log_path = None if log_path is None else Path(log_path)
        self.screen = screen
        self._queue: queue.Queue[_Sample] = queue.Queue(maxsize=queue_size)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._model = None  # a ServedModel, or None: nothing shadowed
        self._stats = ShadowStats(None)
        self._totals = dict.fromkeys(OUTCOMES, 0)  # process lifetime, for Prometheus counters
        self._champion: str | None = None  # the champion version of the latest comparison
        self._note = f"no version has alias {alias!r} yet"

    # --- what the watcher sets --------------------------------------------------------------------
    def set_model(self, model, baseline: ShadowStats | None = None, note: str = "") -> None:
        """Shadow `model` from now on (None: nothing), counting on from `baseline` (its tags' figures)."""
        with self._lock:
            self._model = model
            version = None if model is None else model.version
            self._stats = baseline if baseline is not None and baseline.version == version else ShadowStats(version)
            self._note = note

    def current(self):
        return self._model

    def stats(self) -> ShadowStats:
        with self._lock:
            return self._stats

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    @property
    def queued(self) -> int:
        """Samples waiting for the shadow worker."""
        return self._queue.qsize()

    @property
    def champion_version(self) -> str | None:
        return self._champion

    def describe(self) -> dict[str, Any]:
        """For /metadata: what is shadowed and how it compares so far."""
        stats, model = self.stats(), self._model
        return {"alias": self.alias, "sample_rate": self.sample_rate, "replica_id": self.replica_id,
                "version": None if model is None else model.version, "note": self._note,
                "requests": stats.requests, "agreed": stats.agreed, "agreement": stats.agreement,
                "errors": stats.errors, "dropped": stats.dropped, "queued": self.queued}

    # --- the request path -------------------------------------------------------------------------
    def offer(self, champion_version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        """Called after the champion answered; never blocks, never raises."""
        model = self._model
        if model is None or model.version == champion_version or self.sample_rate <= 0:
            return
        with self._lock:
            if self._random.random() >= self.sample_rate:
                return
        try:
            self._queue.put_nowait(_Sample(champion_version, list(texts), list(predictions)))
        except queue.Full:
            self._count(model.version, dropped=len(texts))

    # --- the worker -------------------------------------------------------------------------------
    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the sample in progress; queued samples are abandoned (they answer no one)."""
        super().stop(timeout_s)

    def _run(self) -> None:
        lower_this_threads_priority()
        while not self._stop.is_set():
            try:
                sample = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self.compare(self._more_of_the_same(sample))
            except Exception:  # a bug in one comparison must not end shadowing
                logger.exception("shadow: comparing a sample failed")

    def _more_of_the_same(self, sample: _Sample) -> _Sample:
        """The sample merged with those queued behind it (same champion version, up to SHADOW_BATCH_TEXTS
        texts): one onnxruntime call for many, which is where the shadow's CPU cost stays small."""
        while len(sample.texts) < SHADOW_BATCH_TEXTS:
            try:
                following = self._queue.get_nowait()
            except queue.Empty:
                break
            if following.champion_version != sample.champion_version:
                self.compare(sample)  # a champion switch in between: each side judged against its own champion
                sample = following
                continue
            sample = _Sample(sample.champion_version, sample.texts + following.texts,
                             sample.predictions + following.predictions)
        return sample

    def compare(self, sample: _Sample) -> None:
        model = self._model  # once per sample, like the batcher: a swap meanwhile starts with the next one
        if model is None or model.version == sample.champion_version:
            return  # the challenger went away, or was promoted: nothing to compare
        try:
            answers = model.predictor.predict(sample.texts, batch_size=len(sample.texts))
            if len(answers) != len(sample.texts):
                raise RuntimeError(f"{len(answers)} predictions for {len(sample.texts)} texts")
        except Exception as error:  # noqa: BLE001 - the challenger's failure is never a client's
            self._count(model.version, errors=len(sample.texts))
            logger.warning("shadow version %s failed on %d texts: %s: %s", model.version, len(sample.texts),
                           type(error).__name__, error)
            return
        same = [agrees(c, s) for c, s in zip(sample.predictions, answers)]
        self._champion = sample.champion_version
        self._count(model.version, agreed=sum(same), disagreed=len(same) - sum(same))
        different = [(t, c, s) for t, c, s, ok in zip(sample.texts, sample.predictions, answers, same) if not ok]
        if different and self.log_path is not None:
            self._log(sample.champion_version, model.version, different)

    def _count(self, version: str | None, agreed: int = 0, disagreed: int = 0, errors: int = 0,
               dropped: int = 0) -> None:
        with self._lock:
            for outcome, n in zip(OUTCOMES, (agreed, disagreed, errors, dropped)):
                self._totals[outcome] += n
            if self._stats.version == version:  # figures of a version no longer shadowed are not mixed in
                s = self._stats
                self._stats = ShadowStats(version, s.agreed + agreed, s.disagreed + disagreed, s.errors + errors,
                                          s.dropped + dropped)

    def _log(self, champion: str | None, challenger: str | None, rows: list[tuple]) -> None:
        """Append the disagreements (text, champion's answer, challenger's answer) as JSON lines, screened."""
        entries = self._screened(rows)
        if not entries:
            return
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = [json.dumps({"time": stamp, "champion_version": champion, "challenger_version": challenger,
                             **entry}, ensure_ascii=False, default=str) for entry in entries]
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError as error:  # a full disk costs the record of a disagreement, not the count
            logger.warning("could not write the shadow log %s: %s", self.log_path, error)

    def _screened(self, rows: list[tuple]) -> list[dict[str, Any]]:
        """The entries as serve.log_pii lets them be written: each text redacted (an NER answer's entities moved
        into the redacted text, their own text with it) with "pii" counts by type, or under drop left out.
        Per entry, not per request as in the prediction log: an entry is one text, and the samples merged into
        one comparison come from different requests, whose other texts are not in this file anyway."""
        if self.screen is None:
            return [{"text": text, "champion": c, "challenger": s} for text, c, s in rows]
        try:  # on this worker thread: the request path never waits for a scan
            screened = self.screen.screen([text for text, _, _ in rows])
        except Exception as error:  # noqa: BLE001 - no scanner: nothing is written unscreened
            logger.warning("shadow log %s: %d disagreements not written: %s", self.log_path, len(rows), error)
            return []
        return [{"text": kept.text, "champion": redacted_prediction(c, kept),
                 "challenger": redacted_prediction(s, kept), **({"pii": kept.pii()} if kept.findings else {})}
                for kept, (_, c, s) in zip(screened, rows) if kept is not None]


def lower_this_threads_priority(niceness: int = SHADOW_NICENESS) -> None:
    """Linux schedules threads one by one: the shadow's threads (and the onnxruntime threads they create,
    which inherit it) yield the CPU to the champion's batcher when both want it. Elsewhere: a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def read_disagreements(path: Path, version: str | None = None, last: int = 5) -> list[dict[str, Any]]:
    """The latest `last` disagreements logged (of `version` only, when given), oldest first."""
    if not Path(path).is_file():
        return []
    found = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if version is None or str(record.get("challenger_version")) == str(version):
                found.append(record)
    return found[-last:] if last > 0 else []


# --- following the alias ---------------------------------------------------------------------------

class ShadowWatcher(StoppableThread):
    """Every poll_interval_s: write the shadowed version's figures to its registry tags (when they
    changed), then load whatever version the alias points at now. A registry outage or a version that
    cannot be loaded costs a log line; the champion's service is never touched."""

    def __init__(self, registry, runner: ShadowRunner, champion_holder, load_version, *,
                 poll_interval_s: float = 10.0, retry_failed_after_s: float = 300.0) -> None:
        """load_version(version) -> a loaded, warmed-up ServedModel (components/serving/deployment.py's loading,
        passed in so that this module does not import the app's)."""
        super().__init__("tunegate-shadow-watcher")
        self.registry, self.runner, self.champion_holder = registry, runner, champion_holder
        self.load_version = load_version
        self.poll_interval_s = poll_interval_s
        self.retry_failed_after_s = retry_failed_after_s
        self._failed_at: dict[str, float] = {}
        self._written: ShadowStats | None = None

    def flush(self) -> bool:
        """Write this replica's figures to its own tag if they changed since the last write; then, if they
        differ, the summary tags from every replica's figures. The tags are re-read at every poll (one registry
        read), so a summary two replicas wrote in the wrong order is put right by the next poll. Returns whether
        this replica's figures were written."""
        stats = self.runner.stats()
        if stats.version is None:
            return False
        changed = stats != self._written
        if changed:
            self.registry.tag_version(stats.version, stats.figures_tag(self.runner.replica_id))
            self._written = stats
        tags = self.registry.version(stats.version).tags
        every_replica = ShadowStats.from_tags(stats.version, tags)
        written_by_any = every_replica.requests or every_replica.errors or every_replica.dropped
        if changed or (written_by_any and _summary_figures(tags) != _summary_figures(every_replica.summary_tags(None))):
            self.registry.tag_version(stats.version, every_replica.summary_tags(self.runner.champion_version))
        return changed

    def poll_once(self) -> str:
        """One look: flush, then follow the alias. Returns what happened (for tests and logs)."""
        try:
            self.flush()
            target = self.registry.aliases().get(self.runner.alias)
        except Exception as error:  # noqa: BLE001 - a registry outage must not stop anything
            logger.warning("shadow: registry unreachable: %s", error)
            return "registry-error"
        champion = self.champion_holder.current().version
        shadowed = self.runner.current()
        if target is None:
            self.runner.set_model(None, note=f"no version has alias {self.runner.alias!r}: nothing shadowed")
            return "no-alias"
        if target == champion:
            self.runner.set_model(None, note=f"alias {self.runner.alias!r} points at the champion's own version "
                                             f"v{target}: nothing to shadow")
            return "same-as-champion"
        if shadowed is not None and shadowed.version == target:
            return "unchanged"
        failed_at = self._failed_at.get(target)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_after_s:
            return "waiting"
        try:
            served = self.load_version(target)
            baseline = ShadowStats.of_replica(target, self.registry.version(target).tags, self.runner.replica_id)
        except Exception as error:  # noqa: BLE001 - a broken challenger is the challenger's problem
            self._failed_at[target] = time.monotonic()
            self.runner.set_model(None, note=f"v{target} could not be loaded: {type(error).__name__}: {error}")
            logger.error("shadow: could not load v%s: %s", target, error)
            return "failed"
        # A replica restarted with the same id counts on from the figures of its tag, rather than overwrite them.
        self.runner.set_model(served, baseline, note=f"shadowing v{target} (alias {self.runner.alias!r})")
        self._written = baseline
        logger.info("shadowing version %s on %.0f%% of requests", target, 100 * self.runner.sample_rate)
        return "switched"

    def _run(self) -> None:
        # Here, not in start(): the challenger's onnxruntime threads are created by the thread that loads it.
        lower_this_threads_priority()
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a bug in one poll must not end shadowing
                logger.exception("shadow watcher: poll failed")
            self._stop.wait(self.poll_interval_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)
        try:
            self.flush()  # the last figures are not lost with the process
        except Exception as error:  # noqa: BLE001
            logger.warning("shadow: could not write the last figures: %s", error)


def _summary_figures(tags: dict[str, str]) -> tuple[str | None, ...]:
    return tuple(tags.get(key) for key in (TAG_REQUESTS, TAG_AGREED, TAG_AGREEMENT, TAG_ERRORS, TAG_DROPPED))


def stats_dict(stats: ShadowStats) -> dict[str, Any]:
    return {**asdict(stats), "requests": stats.requests, "agreement": stats.agreement}
