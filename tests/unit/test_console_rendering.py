"""What the console's playground sends and draws for each task, and how an endpoint's request metrics are
read from the replicas' Prometheus text, without a cluster: the body each task's endpoint takes (checked
by the plugin's own parser), label bars and word shading over the whole text, entity and field spans,
ranked documents; and requests by status code, latency quantiles, batch sizes and replicas summed over
every replica of one tenant's endpoint only."""

from __future__ import annotations

import pytest

from doctune.console.pages.playground import render, request_body, scored_words
from doctune.errors import DoctuneError
from doctune.services.cluster import _samples, summarize_endpoint_samples
from doctune.tasks import get_task


@pytest.mark.parametrize("task, typed, body", [
    ("classification", "股市周一大跌", {"text": "股市周一大跌", "explain": True}),
    ("ner", "Tim Cook visited Paris", {"text": "Tim Cook visited Paris"}),
    ("extraction", "said Bob, economist.", {"text": "said Bob, economist."}),
    ("summarization", "Profits jumped 76%.", {"text": "Profits jumped 76%."}),
    ("retrieval", "interest rates", {"query": "interest rates", "k": 3}),
    ("generation", '{"topic": "sport", "headline": "Owen double"}', {"inputs": [{"topic": "sport", "headline": "Owen double"}]}),
])
def test_each_task_gets_the_body_its_endpoint_takes(task, typed, body):
    sent = request_body(task, typed, 3, explain=True)
    assert sent == body
    assert get_task(task).parse_request(sent)


def test_empty_input_and_generation_without_fields_are_refused_with_the_field():
    for task, typed in (("classification", "  "), ("generation", "just words")):
        with pytest.raises(DoctuneError) as e:
            request_body(task, typed)
        assert e.value.field == "text"


def test_classification_shows_every_label_and_shades_the_whole_text():
    text = "Owen  scored, 进球"
    words = [{"word": "Owen", "start": 0, "end": 4, "score": 0.5}, {"word": "scored", "start": 6, "end": 12, "score": 1.0},
             {"word": ",", "start": 12, "end": 13, "score": -0.2}, {"word": "进", "start": 14, "end": 15, "score": 0.1},
             {"word": "球", "start": 15, "end": 16, "score": 0.3}]
    shown = render("classification", text, {"label": "sport", "score": 0.9, "probabilities": {"sport": 0.9, "tech": 0.1},
                                            "attributions": words})
    assert shown["labels"] == {"sport": 0.9, "tech": 0.1}
    assert "".join(piece for piece, _ in shown["highlighted"]) == text
    assert [s for _, s in shown["highlighted"]] == [0.5, None, 1.0, -0.2, None, 0.1, 0.3]
    assert scored_words("ab", []) == [("ab", None)]


def test_entities_fields_and_ranked_documents_are_drawn():
    ner = render("ner", "Tim Cook visited Paris", {"entities": [{"type": "person", "text": "Tim Cook", "start": 0, "end": 8}]})
    assert ner["highlighted"] == {"text": "Tim Cook visited Paris", "entities": [{"entity": "person", "start": 0, "end": 8}]}
    fields = {"fields": {"role": [{"text": "economist", "start": 10, "end": 19}], "person": []}}
    ext = render("extraction", "said Bob, economist.", fields)
    assert ext["fields"] == fields and ext["highlighted"]["entities"] == [{"entity": "role", "start": 10, "end": 19}]
    ranked = render("retrieval", "q", {"results": [{"doc_id": "d1", "score": 0.83, "text": "UK rates"}]})["ranked"]
    assert list(ranked.itertuples(index=False)) == [(1, 0.83, "d1", "UK rates")]
    assert render("summarization", "x", {"summary": "短"})["text"] == "短"


REPLICA = """# HELP ray_doctune_endpoint_requests_total POST /predict requests answered, by HTTP status code.
# TYPE ray_doctune_endpoint_requests_total counter
ray_doctune_endpoint_requests_total{{endpoint="bbc",replica="{r}",status_code="200",tenant="team-a"}} {ok}
ray_doctune_endpoint_requests_total{{endpoint="bbc",replica="{r}",status_code="401",tenant="team-a"}} 1.0
ray_doctune_endpoint_requests_total{{endpoint="bbc",replica="{r}",status_code="200",tenant="team-b"}} 50.0
# HELP ray_doctune_endpoint_latency_seconds Seconds a replica took to answer POST /predict.
# TYPE ray_doctune_endpoint_latency_seconds histogram
ray_doctune_endpoint_latency_seconds_bucket{{endpoint="bbc",le="0.01",replica="{r}",tenant="team-a"}} 2.0
ray_doctune_endpoint_latency_seconds_bucket{{endpoint="bbc",le="0.05",replica="{r}",tenant="team-a"}} 8.0
ray_doctune_endpoint_latency_seconds_bucket{{endpoint="bbc",le="0.25",replica="{r}",tenant="team-a"}} 10.0
ray_doctune_endpoint_latency_seconds_bucket{{endpoint="bbc",le="+Inf",replica="{r}",tenant="team-a"}} 10.0
ray_doctune_endpoint_latency_seconds_count{{endpoint="bbc",replica="{r}",tenant="team-a"}} 10.0
ray_doctune_endpoint_latency_seconds_sum{{endpoint="bbc",replica="{r}",tenant="team-a"}} 0.4
# HELP ray_doctune_endpoint_batch_size Inputs per model call (batched requests together).
# TYPE ray_doctune_endpoint_batch_size histogram
ray_doctune_endpoint_batch_size_count{{endpoint="bbc",replica="{r}",tenant="team-a"}} 4.0
ray_doctune_endpoint_batch_size_sum{{endpoint="bbc",replica="{r}",tenant="team-a"}} 10.0
# HELP ray_doctune_endpoint_replicas 1 per live replica.
# TYPE ray_doctune_endpoint_replicas gauge
ray_doctune_endpoint_replicas{{endpoint="bbc",replica="{r}",tenant="team-a"}} 1.0
ray_doctune_endpoint_replicas{{endpoint="other",replica="x",tenant="team-a"}} 1.0
"""


def test_an_endpoints_metrics_are_summed_over_its_replicas_and_nothing_else():
    texts = [REPLICA.format(r="r1", ok=9.0), REPLICA.format(r="r2", ok=9.0)]
    m = summarize_endpoint_samples(_samples(texts, "team-a", "bbc"))
    assert m["requests"] == {"200": 18, "401": 2} and m["requests_total"] == 20 and m["replicas"] == 2
    assert m["latency_count"] == 20 and m["latency_mean_s"] == pytest.approx(0.04)
    assert (m["latency_p50_s"], m["latency_p95_s"]) == (0.05, 0.25)
    assert m["mean_batch_size"] == pytest.approx(2.5)
    empty = summarize_endpoint_samples(_samples(texts, "team-c", "bbc"))
    assert empty["requests_total"] == 0 and empty["latency_mean_s"] is None and empty["replicas"] == 0


def test_models_show_their_tasks_primary_metric_beside_the_baseline():
    from doctune.console.pages.models import models_table

    metrics = {"test": {"macro_f1": 0.9, "accuracy": 0.95}, "dev": {"macro_f1": 0.88}, "baseline": {"test": {"macro_f1": 0.2}}}
    table = models_table([{"id": "model-1", "task": "classification", "job_id": "job-1", "metrics": metrics,
                           "merged": True}], {"classification": "macro_f1"})
    [row] = table.to_dict("records")
    assert (row["metric"], row["test"], row["dev"], row["baseline"]) == ("macro_f1", 0.9, 0.88, 0.2)
