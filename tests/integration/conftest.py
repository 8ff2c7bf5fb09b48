"""One real local stack for the whole session: a Ray head (2 logical CPUs, token
auth on), a SeaweedFS `weed` S3 server, SQLite, and the API server, on free
ports under a temporary DOCTUNE_HOME. Nothing here is mocked.

Training jobs a module needs are submitted *ahead*: a module registers a submitter with
:func:`ahead`, and the first integration test starts every registered job of the selected
modules at once, in module order; the dispatcher runs them by fair share while earlier tests
run, and each module's fixture then waits for its own with :func:`finished`. One job per
model, shared by every assertion about it.

A test whose job needs a step taken while it trains (a pause, a killed worker, a cancel) registers
its whole scenario the same way: its submitter starts the job and hands the scenario to
:func:`in_background`, which takes each step when the job gets there while other tests run; the
test then reads the scenario's outcome with :func:`outcome` (its assertions, which run in the
background, fail the test that reads it)."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from doctune.client import DoctuneClient
from doctune.data import to_jsonl
from doctune.corpora import load_bbc_news


END = ("succeeded", "failed", "cancelled")
# The order the modules run in. The session's jobs are all submitted at its start and train while
# tests run; a test that waits for an unfinished job holds up every test after it. So the modules
# that need no trained job come first, then those whose jobs finish first (the session's
# classification model, then the small MiniLM jobs), then the modules that start jobs of their own when
# they run (they would wait behind the session's), then the Gemma jobs (the longest), and last
# the tests that only read a background scenario (long done by then) and the fault tests, which
# kill the API, restart the Ray head and stop the S3 server that the others share. A module not
# named here runs in the middle.
ORDER = [f"tests.integration.{m}" for m in (
    "test_bad_input", "test_doors",
    "test_end_to_end", "test_console_playground", "test_documents", "test_serving",
    "test_plan", "test_toy_task", "test_multilabel", "test_extraction", "test_ner",
    "test_retrieval", "test_lifecycle", "test_deletes",  # it deletes the lifecycle job's model
    "test_resume", "test_sweeps", "test_operator",
    # its tiny job is team-a's: once team-a's jobs started ahead are done (earlier, it waited behind them)
    "test_console_browser",
    "(any other module)",
    # these submit their jobs when they run and wait for them to start: once the session's jobs are done
    "test_ray_job_submit",  # its driver queues team-a's job when it starts: behind team-a's earlier ones
    "test_quotas",
    "test_chinese", "test_generative", "test_tuning_methods", "test_cancel", "test_faults")]


def module_rank(name: str) -> int:
    """A module's place in ORDER (one not named there runs in the middle)."""
    return ORDER.index(name) if name in ORDER else ORDER.index("tests.integration.(any other module)")


def pytest_collection_modifyitems(session, config, items):
    """Run the modules in ORDER (a stable sort keeps each module's own test order)."""
    items.sort(key=lambda item: module_rank(getattr(getattr(item, "module", None), "__name__", "")))


AHEAD: dict[str, tuple[Callable, tuple[str, ...]]] = {}


def ahead(*used_by: str, tests: tuple[str, ...] = ()) -> Callable:
    """Register ``fn(request) -> (client, job)``, which submits a job that the modules ``used_by``
    (default: the module defining ``fn``) need, or only the ``tests`` of that module named, to be
    started when the session's first integration test starts (``request`` gives session fixtures through
    ``request.getfixturevalue``). Its result is ``jobs_ahead[fn.__name__]``. A job whose tests are not
    selected (``-m "not full"``, ``-k``) is not started."""
    def register(fn: Callable) -> Callable:
        users = tuple(f"{fn.__module__}::{t}" for t in tests) or \
            tuple(f"tests.integration.{m}" for m in used_by) or (fn.__module__,)
        AHEAD[fn.__name__] = (fn, users)
        return fn

    return register


@pytest.fixture(scope="session", autouse=True)
def jobs_ahead(request, stack) -> dict:
    """Submit every registered job that a selected test needs (in registration order, the order the
    modules run), and return {name: (client, submitted job)} at once."""
    items = request.session.items
    selected = {item.module.__name__ for item in items} | {f"{item.module.__name__}::{item.originalname}" for item in items}
    wanted = [(name, fn, users) for name, (fn, users) in AHEAD.items() if selected.intersection(users)]
    return {name: fn(request) for name, fn, _ in sorted(wanted, key=_submission_rank)}


# the longest jobs (Gemma) start with the session's shared classification model, so that they are done
# when their modules come, late in ORDER; every other job starts in the order its module runs
FIRST = ("classification_training", "chinese_training", "headline_training", "chinese_generation_training")


def _submission_rank(wanted: tuple) -> tuple:
    name, _, users = wanted
    module = users[0].split("::")[0]
    return (FIRST.index(name) if name in FIRST else len(FIRST), module_rank(module))


def finished(jobs_ahead: dict, name: str, deadline_s: float = 1200) -> tuple:
    """(client, job, *anything else the submitter returned) of the job registered as ``name``, once
    it ended; it must have succeeded."""
    client, job, *rest = jobs_ahead[name]
    done = poll(lambda: (j := client.get_job(job["id"]))["status"] in END and j, deadline_s, f"the {name} job",
                interval=2)
    assert done["status"] == "succeeded", done["error"]
    return (client, done, *rest)


SCENARIOS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ahead-scenario")
# a job started ahead may wait in the queue behind every other job started ahead (the queue drains
# in about 700 s of a full session on 2 cores, and took 34 min on a machine loaded three times over): the first
# wait of a background scenario allows an hour
QUEUED_S = 3600


def in_background(fn: Callable, *args) -> Future:
    """Run ``fn(*args)`` on a thread of the session (for a submitter registered with :func:`ahead`);
    an assertion or a timed-out poll in it fails the test that reads its :func:`outcome`."""
    return SCENARIOS.submit(fn, *args)


def outcome(jobs_ahead: dict, name: str, deadline_s: float = QUEUED_S + 600):
    """What the background scenario registered as ``name`` (its submitter returned ``(client, future)``)
    returned, once it is done; its exception, if it raised one."""
    _, future = jobs_ahead[name]
    return future.result(timeout=deadline_s)


def own_client(stack, client: DoctuneClient) -> DoctuneClient:
    """A client with ``client``'s key and its own connections, for a background scenario."""
    return DoctuneClient(stack.api_url, client.http.headers["Authorization"].removeprefix("Bearer "))


def poll(fn, deadline_s: float, what: str, interval: float = 1.0):
    """Call fn until it returns something truthy, or fail after deadline_s."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from doctune.local import LocalStack, find_free_port_base

    home = tmp_path_factory.mktemp("doctune-home")
    os.environ["DOCTUNE_HOME"] = str(home)
    for var in [v for v in os.environ if v.startswith("DOCTUNE_") and v not in ("DOCTUNE_HOME", "DOCTUNE_TEST_DATABASE_URL")]:
        os.environ.pop(var)
    # the toy seventh task (tests/toy_task) reaches every process of the stack: API, drivers, workers, replicas
    os.environ["DOCTUNE_TASK_PLUGINS"] = "tests.toy_task"
    # the platform's settings of shared multiplexed applications: one small replica on 2 CPUs
    os.environ.update({"DOCTUNE_SHARED_MAX_REPLICAS": "1", "DOCTUNE_SHARED_NUM_CPUS": "0.25"})
    # a real MLflow tracking store (docs/tracking.md) for the jobs that log to it: the shared classification
    # job; the others opt out (NO_MLFLOW below)
    os.environ["DOCTUNE_MLFLOW_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    local = LocalStack(home=home, base=find_free_port_base(), num_cpus=2)
    started = time.time()
    settings = local.up(echo=lambda _: None)
    os.environ.update(settings.ray_env())
    yield settings
    try:
        _keep_job_timeline(settings, started, home.parent / "job_timeline.txt")
    finally:
        local.down(echo=lambda _: None)


JOB_TIMELINE: list[str] = []


def _keep_job_timeline(settings, started: float, path: Path) -> None:
    """The session's jobs, when each queued, started and ended (job_timeline.py), for the summary."""
    from .job_timeline import job_rows, render

    try:
        JOB_TIMELINE.append(render(job_rows(settings, started)))
    except Exception as exc:  # a report, not a test: a stack the fault tests left broken still ends
        JOB_TIMELINE.append(f"(no job timeline: {exc})")
    path.write_text(JOB_TIMELINE[-1] + "\n")


def pytest_terminal_summary(terminalreporter):
    """Where the session's time went, job by job (seconds): the queue of jobs on 2 cores is its wall time."""
    if JOB_TIMELINE:
        terminalreporter.section("integration jobs (seconds from the session's start)")
        terminalreporter.write_line(JOB_TIMELINE[-1])


@pytest.fixture(scope="session")
def admin(stack):
    return DoctuneClient(stack.api_url, stack.admin_key)


# deployments the whole session shares (the classification endpoint): kept when the module that
# deployed them ends
SHARED_DEPLOYMENTS: set[str] = set()
LIVE = ("deploying", "running")


@pytest.fixture(scope="module", autouse=True)
def endpoints_go_with_their_module(request, stack):
    """Undeploy the endpoints a module left running (a failed test skips its own cleanup): each holds
    logical CPUs of the session's 2, and a later module's job then waited for room until it timed out
    (a quota test's job waited 900 s behind a failed multiplexing test's endpoints)."""
    admin = request.getfixturevalue("admin")
    before = {d["id"] for d in admin.list_deployments()}
    yield
    try:
        left = [d for d in admin.list_deployments() if d["status"] in LIVE
                and d["id"] not in before and d["id"] not in SHARED_DEPLOYMENTS]
    except Exception:  # the fault tests stop what the stack runs: nothing to tidy
        return
    for d in left:
        admin.delete_deployment(d["id"])
    for d in left:
        poll(lambda: admin.get_deployment(d["id"])["status"] not in (*LIVE, "deleting"), 300, f"undeploy {d['name']}",
             interval=2)


@pytest.fixture(scope="session")
def tenant_a(admin):
    """team-a, the tenant most modules share: 4 concurrent jobs instead of the default 2, so that a job a
    test submits while it watches (the browser's tiny job) waits for cluster room, not behind every
    team-a job started ahead."""
    key = admin.create_tenant("team-a")["api_key"]
    admin.request("PUT", "/v1/tenants/team-a/quota", json={"max_concurrent_jobs": 4})
    return key


@pytest.fixture(scope="session")
def tenant_b(admin):
    return admin.create_tenant("team-b")["api_key"]


@pytest.fixture(scope="session")
def client_a(stack, tenant_a):
    return DoctuneClient(stack.api_url, tenant_a)


@pytest.fixture(scope="session")
def client_b(stack, tenant_b):
    return DoctuneClient(stack.api_url, tenant_b)


def run_job(client: DoctuneClient, spec: dict, what: str, deadline_s: float = 600) -> dict:
    """Submit a job, wait for it to end, and insist that it succeeded."""
    job = client.submit_job(spec)
    job = poll(lambda: (j := client.get_job(job["id"]))["status"] in ("succeeded", "failed", "cancelled") and j,
               deadline_s, what)
    assert job["status"] == "succeeded", job["error"]
    return job


def new_tenant(stack, admin, name: str) -> DoctuneClient:
    """A client of a fresh tenant; ``.key`` is its Authorization header, for raw HTTP calls."""
    client = DoctuneClient(stack.api_url, admin.create_tenant(name)["api_key"])
    client.key = client.http.headers["Authorization"]
    return client


@pytest.fixture(scope="session")
def tenant_clients() -> dict:
    return {}


def tenant_client(request, name: str) -> DoctuneClient:
    """The session's client of tenant ``name``, created on first use (for submitters registered with
    :func:`ahead`, which get the ``request`` of the session)."""
    clients = request.getfixturevalue("tenant_clients")
    if name not in clients:
        clients[name] = new_tenant(request.getfixturevalue("stack"), request.getfixturevalue("admin"), name)
    return clients[name]


@pytest.fixture(scope="session")
def bbc_small():
    """A small real BBC subset (30 articles per class)."""
    return load_bbc_news(limit_per_class=30)


@pytest.fixture(scope="session")
def bbc_dataset(client_a, bbc_small):
    return client_a.upload_dataset("bbc-small", "classification", {"data": to_jsonl(bbc_small)}, seed=42)


REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


@ahead("test_end_to_end", "test_serving", "test_plan", "test_console_playground", "test_documents")
def classification_training(request):
    """The demo's shipped spec (LoRA, ZeRO-2, 2 workers) shrunk to 20 steps without accumulation, on the
    small BBC set of tenant team-a: trained once, checked by the end-to-end tests, served by several."""
    client = request.getfixturevalue("client_a")
    dataset = request.getfixturevalue("bbc_dataset")
    job = client.submit_job(example_job("bbc-classification.yaml", dataset["id"], max_steps=20, micro_batch_size=4,
                                        gradient_accumulation_steps=1, max_seq_length=64, learning_rate=2e-3,
                                        eval_interval=10, checkpoint_interval=10, tracking={"mlflow": True}))
    assert job["status"] == "queued" and job["tenant"] == "team-a"
    return client, job


def session_classification(request, fixture: str = "classification_job") -> dict:
    """The session's classification job (or ``classification_endpoint``) for a module that may run alone:
    when no module that registers it runs, its job is submitted here (once) rather than a model of the
    module's own being trained."""
    jobs_ahead = request.getfixturevalue("jobs_ahead")
    if "classification_training" not in jobs_ahead:
        jobs_ahead["classification_training"] = AHEAD["classification_training"][0](request)
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def classification_job(jobs_ahead):
    return finished(jobs_ahead, "classification_training")[1]


@pytest.fixture(scope="session")
def classification_endpoint(client_a, classification_job):
    """A running endpoint of the session's classification model, shared by every module that queries
    it (end to end, documents, the console's playground): one already running (the browser test
    deploys it through the console), else one deployed here. A deploy and an undeploy cost a Ray job
    each; one endpoint for the session saves the CPU of three."""
    model_id = classification_job["model_id"]
    running = [d for d in client_a.list_deployments(state="running") if d["model_id"] == model_id]
    if running:
        SHARED_DEPLOYMENTS.add(running[0]["id"])
        return running[0]
    dep = client_a.deploy(model_id, "bbc", min_replicas=1, max_replicas=1, num_cpus=0.25)
    SHARED_DEPLOYMENTS.add(dep["id"])
    dep = poll(lambda: (d := client_a.get_deployment(dep["id"]))["status"] != "deploying" and d, 600, "the deployment",
               interval=2)
    assert dep["status"] == "running", dep["message"]
    return dep


# the session's jobs stay out of the MLflow store (the driver's MLflow import and model copy cost each job
# seconds of the 2 cores); the shared classification job logs to it, and test_end_to_end checks its run
NO_MLFLOW = {"tracking": {"mlflow": False}}


def example_job(name: str, dataset_id: str, **overrides) -> dict:
    """A shipped example (``docs/examples/<name>``) run end to end on this session's small stack:
    its task, base model, tuning method and DeepSpeed stage, on the test's dataset, with tiny
    steps (``max_steps`` replaces ``epochs``) and workers sharing the 2 logical CPUs."""
    import yaml

    spec = yaml.safe_load((EXAMPLES / name).read_text())
    spec.pop("tenant")  # the test client's tenant
    spec.pop("epochs", None)
    spec.update({"dataset": {"id": dataset_id}, "resources_per_worker": {"cpu": 0.5, "threads": 1}, **NO_MLFLOW,
                 **overrides})
    return spec


def tiny_job(dataset_id: str, **overrides) -> dict:
    """A tiny but real job: MiniLM, LoRA, ZeRO-2, 2 workers sharing 1 logical CPU."""
    spec = {
        "task": "classification",
        "base_model": "all-minilm-l6-v2",
        "dataset": {"id": dataset_id},
        "tuning": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]}},
        "deepspeed": {"zero_stage": 2},
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 20,
        "learning_rate": 2e-3,
        "warmup_ratio": 0.1,
        "max_seq_length": 64,
        "eval_interval": 10,
        "checkpoint_interval": 10,
        "num_workers": 2,
        "resources_per_worker": {"cpu": 0.5, "threads": 1},
        "seed": 42,
        **NO_MLFLOW,
    }
    spec.update(overrides)
    return spec
