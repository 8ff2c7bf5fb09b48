"""The console's playground and deployments page against a real endpoint, through ``gradio_client``:
the session's classification model (trained once, ``classification_job``) is served (an endpoint of
that model already running is reused), the playground calls its public URL with the tenant's key and
shows every label's probability and, with explain, an attribution for every word (Chinese: every
character), and the deployments page then shows the requests counted by the replicas' metrics."""

from __future__ import annotations

import socket

import pytest
from tests.e2e.console import console_client
from gradio_client.exceptions import AppError

from .conftest import poll

SPORT = "Owen scored twice as Newcastle beat Chelsea in the Premiership, and the striker was named man of the match."
CHINESE = "中国队在世界杯比赛中二比一战胜了日本队。"
LABELS = {"business", "entertainment", "politics", "sports", "tech"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def console(stack):
    from doctune.console.app import build_console, queued

    blocks = queued(build_console(stack.api_url))
    port = _free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()


@pytest.fixture(scope="module")
def member(console, tenant_a):
    client = console_client(console)
    client.predict(tenant_a, api_name="/do_sign_in")
    return client


@pytest.fixture(scope="module")
def deployment(classification_endpoint):
    return classification_endpoint


def _value(output):
    """An output's value: the playground answers updates (value and visibility), which gradio_client returns whole."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def _predict(member: Client, dep: dict, text: str, explain: bool = True) -> list:
    about = member.predict(dep["id"], api_name="/playground_deployment")  # the task is kept in a gr.State
    assert about.startswith("**classification** endpoint") and dep["url"] in about
    return [_value(out) for out in member.predict(dep["id"], text, 5, explain, api_name="/playground_predict")]


def test_the_playground_shows_label_bars_and_word_attributions(member, deployment):
    labels, highlighted, *_ = _predict(member, deployment, SPORT)
    assert {c["label"] for c in labels["confidences"]} == LABELS
    assert sum(c["confidence"] for c in labels["confidences"]) == pytest.approx(1.0, abs=1e-3)
    scored = [(h["token"], h["class_or_confidence"]) for h in highlighted]
    assert "".join(token for token, _ in scored) == SPORT  # the whole text, gaps included
    words = [(token, score) for token, score in scored if score is not None]
    assert len(words) == len(SPORT.replace(",", " ,").replace(".", " .").split())
    assert max(abs(score) for _, score in words) == pytest.approx(1.0)


def test_chinese_input_is_explained_character_by_character(member, deployment):
    labels, highlighted, *_ = _predict(member, deployment, CHINESE)
    assert labels["label"] in LABELS
    assert "".join(h["token"] for h in highlighted) == CHINESE
    assert all(len(h["token"]) == 1 for h in highlighted if h["class_or_confidence"] is not None)


def test_without_explain_only_the_labels_show(member, deployment):
    labels, highlighted, *_ = _predict(member, deployment, SPORT, explain=False)
    assert labels["label"] in LABELS and not highlighted


def test_the_endpoints_error_is_a_message(member, deployment):
    with pytest.raises(AppError, match="Type an input"):
        _predict(member, deployment, "   ")


def test_the_deployments_page_shows_revisions_and_counted_requests(member, deployment):
    _predict(member, deployment, SPORT)

    def shown():
        metrics, revisions = member.predict(deployment["id"], api_name="/models_deployment")
        # the replica gauge is read at each scrape: on a loaded machine one scrape may miss it (Ray drops a
        # gauge whose export came more than two intervals ago), so wait for one that has it
        return "requests" in metrics and "200:" in metrics and "Replicas**: 1" in metrics and (metrics, revisions)

    metrics, revisions = poll(shown, 180, "the endpoint's request metrics and 1 replica on the deployments page",
                              interval=5)
    assert [r["current"] for r in [dict(zip(revisions["headers"], row)) for row in revisions["data"]]][-1] is True
