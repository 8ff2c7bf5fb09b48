"""Experiment tracking by a job's (or a sweep's) driver: TensorBoard event files in the object store,
and an MLflow run when the platform names an MLflow tracking store (``DOCTUNE_MLFLOW_URI``).

:class:`JobTracker` is what :mod:`doctune.drivers.job` feeds: its progress pump hands it each progress
snapshot with the training messages rank 0 sent since the last one (:meth:`JobTracker.observe`), and
the attempt's end hands it the outcome (:meth:`JobTracker.finish`). From them it logs, under the same
names in both:

================================  ===========================================================
``train/loss``                    mean loss over the steps since the previous message (about 1 s)
``train/learning_rate``           the scheduler's learning rate
``throughput/steps_per_s``        optimizer steps per second over the last 20 steps
``throughput/tokens_per_s``       tokens (all ranks) per second over the same window
``memory/rank0_rss_mb``           rank 0's resident memory
``dev/<metric>``                  each dev evaluation, at its step
``baseline/{dev,test}/<metric>``  the base model with an untrained head, at step 0
``test/<metric>``                 the final test evaluation, at the last step
``memory/peak_train_mb``          the largest worker's peak while training, at the last step
================================  ===========================================================

TensorBoard (:class:`TensorBoardLog`): one event file per attempt in a local scratch folder, uploaded to
``tenants/<tenant>/jobs/<job>/tensorboard/`` (:func:`doctune.train.trainer.tensorboard_prefix`) after each
evaluation and checkpoint and at the end, never per step. A resumed attempt's file purges what an earlier
attempt logged past the checkpoint it resumed from.

MLflow (:class:`MlflowRun`): one experiment per tenant (``doctune/<tenant>``), one run per job, tagged
``doctune.job_id`` (a later attempt logs into the same run), its params the JobSpec flattened
(``tuning.lora.r``), its metrics the table above, and the exported model's files as the artifact
folder ``model``. A sweep is a parent run (:class:`SweepRun`) and its trials nested runs. The run starts
on a thread, so that importing mlflow never holds up training.

Tracking never fails a job: an error is printed to the driver's log and that tracker stops.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["JobTracker", "MlflowRun", "SweepRun", "TensorBoardLog", "experiment_name", "flatten_params",
           "mlflow_client", "numeric_leaves"]

MLFLOW_START_WAIT_S = 300.0  # how long the end of a job waits for its MLflow run to be started
_BATCH = 1000  # the most metrics MLflow takes in one log_batch (and 100 params)
# how an attempt's outcome ends its job's MLflow run; a paused or re-queued job's stays RUNNING
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def _warn(what: str, exc: BaseException) -> None:
    print(f"doctune: experiment tracking: {what} failed ({type(exc).__name__}: {exc}); the job goes on without it",
          file=sys.stderr, flush=True)


def numeric_leaves(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The plain numbers of an evaluation (``accuracy``, ``macro_f1``, ``loss``), not ``step`` and not the
    nested tables (per class, confusion matrix)."""
    return {k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


# ------------------------------------------------------------------ TensorBoard
class TensorBoardLog:
    """Scalars written with ``torch.utils.tensorboard.SummaryWriter`` into ``local_dir``; :meth:`sync`
    flushes them and uploads the folder's event files to ``prefix`` in ``store`` (when one is given)."""

    def __init__(self, local_dir: str | Path, store: Any = None, prefix: str | None = None,
                 purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.local_dir, self.store, self.prefix = Path(local_dir), store, prefix
        # nothing is flushed on a timer: sync() decides when (at evaluations, checkpoints and the end)
        self.writer = SummaryWriter(str(self.local_dir), purge_step=purge_step, max_queue=100_000, flush_secs=86_400)

    def add(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def sync(self) -> int:
        """Flush, then upload every event file of the folder (each small, and rewritten whole); the
        number uploaded."""
        self.writer.flush()
        if self.store is None or self.prefix is None:
            return 0
        n = 0
        for path in sorted(self.local_dir.iterdir()):
            if path.is_file():
                self.store.upload_file(path, f"{self.prefix}/{path.name}")
                n += 1
        return n

    def close(self) -> None:
        self.writer.close()


# ------------------------------------------------------------------ MLflow
def mlflow_client(uri: str) -> Any:
    """A client of the tracking store ``uri``. A tracking server that does not answer is retried 3 times
    with 30 s timeouts (MLflow's defaults would hold the job's end for many minutes); the environment
    may say otherwise (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``)."""
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_name(tenant: str) -> str:
    return f"doctune/{tenant}"


def _artifact_location(uri: str, artifact_uri: str, name: str) -> str | None:
    """Where a new experiment keeps its artifacts: under ``artifact_uri``, else beside a ``sqlite:///``
    store's file (MLflow's own default there is ``./mlruns`` of whatever folder the driver runs in), else
    the tracking server's default (None)."""
    if artifact_uri:
        return f"{artifact_uri.rstrip('/')}/{name}"
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent / "mlartifacts" / name)
    return None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a ``sqlite:///`` store (one machine, every driver beside it): an exclusive lock on a file beside
    it while a client opens it, so that drivers starting together never make its tables twice at once."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        yield
        return
    import fcntl

    lock = Path(uri.removeprefix("sqlite:///")).expanduser()
    with open(lock.with_name(lock.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _experiment_id(client: Any, name: str, location: str | None) -> str:
    """The experiment ``name``, made if missing (another driver may make it at the same moment)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def flatten_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: nested keys joined with dots (``tuning.lora.r``), lists as JSON, no
    nulls, values cut to MLflow's 6000 characters."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        elif value is not None:
            out[name] = (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:6000]
    return out


class MlflowRun:
    """One MLflow run, started on a thread (importing mlflow takes seconds): metrics logged before it
    has started wait in a buffer. ``find_tag``: a (tag, value) whose run, if one exists, is carried on
    (a job's later attempt) instead of starting another; its params are then not logged again."""

    def __init__(self, uri: str, artifact_uri: str, *, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, str], find_tag: tuple[str, str] | None = None) -> None:
        self.uri, self.experiment = uri, experiment
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.client: Any = None
        self.failed = False
        self._pending: list[tuple[str, float, int]] = []
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(artifact_uri, run_name, tags, params, find_tag),
                                        name="doctune-mlflow", daemon=True)
        self._thread.start()

    def _start(self, artifact_uri: str, run_name: str, tags: dict[str, str], params: dict[str, str],
               find_tag: tuple[str, str] | None) -> None:
        try:
            for attempt in range(3):  # drivers starting together may race to create the store's tables
                try:
                    self._open(artifact_uri, run_name, tags, params, find_tag)
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    time.sleep(1 + 2 * attempt)
        except Exception as exc:
            self.failed = True
            _warn(f"starting the MLflow run in {self.uri.split('://')[0]} store", exc)
        finally:
            self._started.set()

    def _open(self, artifact_uri: str, run_name: str, tags: dict[str, str], params: dict[str, str],
              find_tag: tuple[str, str] | None) -> None:
        from mlflow.entities import Param

        with _store_lock(self.uri):  # the first client of a SQLite store makes its tables
            client = mlflow_client(self.uri)
            exp = _experiment_id(client, self.experiment, _artifact_location(self.uri, artifact_uri, self.experiment))
        if find_tag is not None:
            found = client.search_runs([exp], filter_string=f"tags.`{find_tag[0]}` = '{find_tag[1]}'", max_results=1)
            if found:
                self.client, self.experiment_id, self.run_id = client, exp, found[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
                return
        run = client.create_run(exp, run_name=run_name, tags=tags)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i:i + 100])
        self.client, self.experiment_id, self.run_id = client, exp, run.info.run_id

    def wait_started(self, timeout_s: float = MLFLOW_START_WAIT_S) -> bool:
        """Whether the run is there to log into, waiting up to ``timeout_s`` for it to start; a run that
        did not start in time is given up (no later call waits again)."""
        if not self.failed and not self._started.wait(timeout_s):
            self.failed = True
            print(f"doctune: experiment tracking: the MLflow run did not start within {timeout_s:.0f} s; the job "
                  "goes on without it", file=sys.stderr, flush=True)
        return self.run_id is not None and not self.failed

    def add(self, key: str, value: float, step: int) -> None:
        with self._lock:
            self._pending.append((key, float(value), int(step)))

    def flush(self, wait: bool = False) -> None:
        """Log the buffered metrics (when the run has started, or ``wait`` for it)."""
        if self.failed or not (self.wait_started() if wait else self._started.is_set() and self.run_id):
            return
        from mlflow.entities import Metric

        with self._lock:
            pending, self._pending = self._pending, []
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in pending]
        try:
            for i in range(0, len(metrics), _BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + _BATCH])
        except Exception as exc:
            self.failed = True
            _warn("logging metrics to MLflow", exc)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.wait_started():
            try:
                for k, v in tags.items():
                    self.client.set_tag(self.run_id, k, v)
            except Exception as exc:
                _warn("tagging the MLflow run", exc)

    def log_folder(self, local_dir: str | Path, artifact_path: str) -> None:
        if self.wait_started():
            try:
                self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)
            except Exception as exc:
                _warn(f"logging {artifact_path} to MLflow", exc)

    def end(self, status: str | None) -> None:
        """Flush, and end the run as ``status`` (FINISHED, FAILED, KILLED); None leaves it RUNNING
        (a paused or re-queued job: a later attempt carries it on)."""
        self.flush(wait=True)
        if status is None or not self.wait_started():
            return
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            _warn("ending the MLflow run", exc)


# ------------------------------------------------------------------ a job's tracker
class JobTracker:
    """Everything a job attempt's driver logs for experiment tracking (module docstring). ``store`` and
    ``prefix``: where the TensorBoard files go; ``mlflow_uri``: "" for no MLflow; ``parent_run_id``:
    the sweep's MLflow run, for a trial."""

    def __init__(self, *, job_id: str, spec: dict[str, Any], store: Any, prefix: str, scratch: str | Path,
                 mlflow_uri: str = "", mlflow_artifact_uri: str = "", parent_run_id: str | None = None) -> None:
        self.job_id, self.spec, self.store, self.prefix = job_id, spec, store, prefix
        self.scratch = Path(scratch)
        self.tb: TensorBoardLog | None = None
        self.tb_failed = False
        self.mlflow: MlflowRun | None = None
        self._lock = threading.Lock()
        self._history_seen = 0
        self._baseline_logged = False
        self._checkpoint_seen: Any = None
        self._previous: dict[str, Any] | None = None  # the last training message, for tokens/s
        if mlflow_uri:
            tenant = spec.get("tenant") or ""
            tags = {"doctune.job_id": job_id, "doctune.tenant": tenant, "doctune.task": str(spec.get("task"))}
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            self.mlflow = MlflowRun(mlflow_uri, mlflow_artifact_uri, experiment=experiment_name(tenant),
                                    run_name=spec.get("name") or job_id, tags=tags, params=flatten_params(spec),
                                    find_tag=("doctune.job_id", job_id))

    # -------------------------------------------------------------- what gets logged
    def _writer(self, state: dict[str, Any]) -> TensorBoardLog | None:
        """The attempt's event file, opened at the first scalar (by then rank 0 has said which step it
        resumed from: what an earlier attempt logged from the next step on is purged)."""
        if self.tb is None and not self.tb_failed:
            try:
                resumed = int(state.get("resumed_from_step") or 0)
                self.tb = TensorBoardLog(self.scratch / "tensorboard", self.store, self.prefix,
                                         purge_step=resumed + 1 if resumed else None)
                self.tb.add_text("spec", "```\n" + json.dumps(self.spec, indent=2) + "\n```")
            except Exception as exc:
                self.tb_failed = True
                _warn("opening the TensorBoard event file", exc)
        return self.tb

    def _add(self, state: dict[str, Any], scalars: Iterable[tuple[str, float, int]]) -> None:
        scalars = list(scalars)
        tb = self._writer(state) if scalars else None
        for tag, value, step in scalars:
            if tb is not None:
                tb.add(tag, value, step)
            if self.mlflow is not None:
                self.mlflow.add(tag, value, step)

    def _training_scalars(self, series: list[dict[str, Any]]) -> Iterable[tuple[str, float, int]]:
        for m in series:
            step = m.get("step")
            if not isinstance(step, int):
                continue
            for tag, key in (("train/loss", "loss"), ("train/learning_rate", "lr"),
                             ("throughput/steps_per_s", "steps_per_s"), ("memory/rank0_rss_mb", "memory_mb")):
                if isinstance(m.get(key), (int, float)):
                    yield tag, m[key], step
            prev = self._previous
            if (prev is not None and step > prev["step"] and isinstance(m.get("steps_per_s"), (int, float))
                    and isinstance(m.get("tokens_seen"), int) and isinstance(prev.get("tokens_seen"), int)):
                per_step = (m["tokens_seen"] - prev["tokens_seen"]) / (step - prev["step"])
                yield "throughput/tokens_per_s", m["steps_per_s"] * per_step, step
            self._previous = m

    def observe(self, state: dict[str, Any], series: list[dict[str, Any]]) -> None:
        """One progress snapshot and the training messages since the last: log what is new; after a
        new dev evaluation or checkpoint, upload the event file and send MLflow its metrics."""
        with self._lock:
            self._observe(state, series)

    def _observe(self, state: dict[str, Any], series: list[dict[str, Any]]) -> None:
        self._add(state, self._training_scalars(series))
        baseline = state.get("baseline")
        if isinstance(baseline, dict) and not self._baseline_logged:
            self._baseline_logged = True
            self._add(state, [(f"baseline/{split}/{k}", v, 0) for split in ("dev", "test")
                              for k, v in numeric_leaves(baseline.get(split)).items()])
        history = state.get("history") or []
        resumed = int(state.get("resumed_from_step") or 0)
        new = [e for e in history[self._history_seen:] if isinstance(e.get("step"), int) and e["step"] > resumed]
        self._history_seen = len(history)
        self._add(state, [(f"dev/{k}", v, e["step"]) for e in new for k, v in numeric_leaves(e).items()])
        checkpoint = state.get("last_checkpoint_step")
        saved = checkpoint is not None and checkpoint != self._checkpoint_seen
        self._checkpoint_seen = checkpoint
        if new or saved:
            self._sync()

    def _sync(self) -> None:
        if self.tb is not None:
            try:
                self.tb.sync()
            except Exception as exc:
                _warn("uploading the TensorBoard event file", exc)
        if self.mlflow is not None:
            self.mlflow.flush()

    def finish(self, outcome: str, state: dict[str, Any] | None = None, final: dict[str, Any] | None = None,
               model_prefix: str | None = None) -> None:
        """The attempt ended: ``outcome`` "succeeded", "failed", "cancelled", "paused" or "requeued".
        Logs the last snapshot and the final evaluation (test metrics, memory), uploads the event file,
        logs the exported model (the files under ``model_prefix`` in the store) to MLflow as the folder
        ``model``, and ends the MLflow run (a paused or re-queued job's stays running for its next attempt)."""
        try:
            self._finish(outcome, state, final, model_prefix)
        except Exception as exc:  # never the job's failure
            _warn("ending the job's tracking", exc)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _finish(self, outcome: str, state: dict[str, Any] | None, final: dict[str, Any] | None,
                model_prefix: str | None) -> None:
        with self._lock:
            state = state or {}
            if final:
                self._observe({**state, **{k: final[k] for k in ("history",) if k in final}}, [])
                step = int(final.get("step") or state.get("step") or 0)
                memory = final.get("memory") or {}
                scalars = [(f"test/{k}", v, step) for k, v in numeric_leaves(final.get("test")).items()]
                scalars += [(f"memory/{k}", memory[k], step) for k in ("peak_train_mb", "start_mb")
                            if isinstance(memory.get(k), (int, float))]
                self._add(state, scalars)
            self._sync()
            if self.tb is not None:
                self.tb.close()
        if self.mlflow is None:
            return
        if model_prefix is not None and self.mlflow.wait_started():
            model_dir = self.scratch / "model"
            self.store.download_dir(model_prefix, model_dir)
            self.mlflow.log_folder(model_dir, "model")
        self.mlflow.end(RUN_STATUS.get(outcome))

    def relabel(self, outcome: str) -> None:
        """End the MLflow run again as ``outcome`` (a job that finished but was cancelled meanwhile)."""
        if self.mlflow is not None:
            self.mlflow.end(RUN_STATUS.get(outcome))

    def summary(self) -> dict[str, Any] | None:
        """Where the job's MLflow run is (for the job's metrics), once it has started."""
        if self.mlflow is None or not self.mlflow.wait_started():
            return None
        return {"run_id": self.mlflow.run_id, "experiment_id": self.mlflow.experiment_id,
                "experiment": self.mlflow.experiment}


# ------------------------------------------------------------------ a sweep's run
class SweepRun:
    """A sweep's MLflow parent run: its trials' runs nest under it (``mlflow.parentRunId``)."""

    def __init__(self, uri: str, artifact_uri: str, *, sweep_id: str, spec: dict[str, Any]) -> None:
        tenant = spec.get("tenant") or ""
        params = flatten_params(spec)  # the search space, the algorithm, and the job every trial starts from
        self.run = MlflowRun(uri, artifact_uri, experiment=experiment_name(tenant),
                             run_name=spec.get("name") or sweep_id,
                             tags={"doctune.sweep_id": sweep_id, "doctune.tenant": tenant},
                             params=params, find_tag=("doctune.sweep_id", sweep_id))

    def parent_run_id(self) -> str | None:
        return self.run.run_id if self.run.wait_started() else None

    def finish(self, status: str, winner: dict[str, Any] | None, metric: str) -> None:
        if winner is not None:
            self.run.set_tags({"doctune.winner_job_id": str(winner.get("job_id"))})
            value = winner.get("dev")  # the winner's dev metric (its leaderboard row)
            if isinstance(value, (int, float)):
                self.run.add(f"best/dev/{metric}", value, 0)
        self.run.end(status)
