"""Playground: try a deployed endpoint the way a user's ``curl`` does, through its public URL with the
signed-in tenant's key, and see the answer drawn for its task:

* classification: the label bars (``gr.Label``) and, with "explain", which words drove the label
  (``gr.HighlightedText`` with each word's score; the endpoint's ``explain: true``);
* ner: the entities highlighted in the text; extraction: fields and relations as JSON, their spans
  highlighted; summarization and generation: the text; retrieval: the ranked documents with scores.

Chinese input goes through as typed (UTF-8 JSON). A dropped document (PDF, image, DOCX, HTML, ``.eml``)
goes to the same endpoint as the multipart part ``file`` (docs/documents.md); its extracted text, pages,
extractor and language are shown with the prediction."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import httpx
import pandas as pd

from doctune.console.context import Console, action
from doctune.errors import DoctuneError, error_from_response

OUTPUTS = ("labels", "highlighted", "fields", "text", "ranked")
SHOWN = {"classification": {"labels", "highlighted"}, "ner": {"highlighted"}, "extraction": {"highlighted", "fields"},
         "summarization": {"text"}, "generation": {"text"}, "retrieval": {"ranked"}}
RANK_COLUMNS = ["rank", "score", "doc_id", "text"]


def request_body(task: str, text: str, k: float | None = None, explain: bool = False) -> dict[str, Any]:
    """The ``POST /predict`` body for one input of ``task`` (generation: a JSON object of fields)."""
    text = (text or "").strip()
    if not text:
        raise DoctuneError("Type an input first.", "invalid_request", field="text")
    if task == "retrieval":
        return {"query": text, "k": int(k or 5)}
    if task == "generation":
        try:
            fields = json.loads(text)
        except json.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict):
            raise DoctuneError('Generation takes its fields as a JSON object, e.g. {"topic": "sport", "headline": "..."}',
                               "invalid_request", field="text")
        return {"inputs": [fields]}
    return {"text": text, "explain": True} if task == "classification" and explain else {"text": text}


def _post(url: str, authorization: str, timeout: float, **request: Any) -> dict[str, Any]:
    """POST to the endpoint with the tenant's key, as ``curl`` would; its error as a DoctuneError."""
    try:
        r = httpx.post(url, headers={"Authorization": authorization}, timeout=timeout, **request)
    except httpx.TransportError as e:
        raise DoctuneError(f"the endpoint {url} did not answer ({type(e).__name__}); is the deployment running?",
                           "unavailable") from None
    if r.status_code >= 400:
        raise error_from_response(r.status_code, r.text)
    return r.json()


def call_endpoint(url: str, authorization: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the body as JSON."""
    return _post(url, authorization, 120, json=body)


def call_endpoint_with_file(url: str, authorization: str, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    """POST the document at ``path`` as the multipart part ``file`` (other fields as JSON values), as
    ``curl -F file=@doc.pdf`` would."""
    from pathlib import Path

    doc = Path(path)
    data = {k: json.dumps(v) for k, v in fields.items()}
    return _post(url, authorization, 180, data=data, files={"file": (doc.name, doc.read_bytes())})


def document_markdown(doc: dict[str, Any] | None) -> str:
    """What the endpoint read from a document: extractor, language, pages (with their character ranges)."""
    if not doc:
        return ""
    pages = doc.get("pages") or []
    ranges = ", ".join(f"p{p['page']}: {p['start']}–{p['end']}" for p in pages[:20]) + (" …" if len(pages) > 20 else "")
    return (f"**{doc.get('name', 'document')}**: {len(pages)} page(s) read by `{doc.get('extractor')}`, "
            f"language `{doc.get('language')}`, {len(doc.get('text') or '')} characters ({ranges})")


def scored_words(text: str, words: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
    """The whole text as (piece, score) pairs for HighlightedText: each word with its attribution, the
    gaps between words unscored."""
    out, at = [], 0
    for w in words:
        if w["start"] > at:
            out.append((text[at:w["start"]], None))
        out.append((text[w["start"]:w["end"]], float(w["score"])))
        at = max(at, w["end"])
    if at < len(text):
        out.append((text[at:], None))
    return out


def _spans(node: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """Every {start, end} span in an answer, labelled by its type, relation side or field name."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("start"), int) and isinstance(node.get("end"), int):
            found.append({"entity": node.get("type") or kind or "span", "start": node["start"], "end": node["end"]})
        for key, value in node.items():
            found += _spans(value, key if key not in ("fields", "entities", "predictions") else kind)
    elif isinstance(node, list):
        for value in node:
            found += _spans(value, kind)
    return found


def render(task: str, text: str, prediction: dict[str, Any]) -> dict[str, Any]:
    """What each output shows for one prediction of ``task`` (keys of :data:`OUTPUTS`)."""
    if task == "classification":
        probs = prediction.get("probabilities") or {}
        words = prediction.get("attributions")
        return {"labels": probs, "highlighted": scored_words(text, words) if words else None}
    if task in ("ner", "extraction"):
        pairs = prediction.get("head") is not None
        spans = [] if pairs else _spans(prediction)
        return {"highlighted": {"text": text, "entities": spans}, "fields": prediction if task == "extraction" else None}
    if task == "retrieval":
        rows = [{"rank": i, "score": round(r["score"], 4), "doc_id": r["doc_id"], "text": r.get("text", "")}
                for i, r in enumerate(prediction.get("results") or [], 1)]
        return {"ranked": pd.DataFrame(rows, columns=RANK_COLUMNS)}
    return {"text": prediction.get("summary") or prediction.get("text") or json.dumps(prediction, ensure_ascii=False)}


def build(console: Console) -> None:
    with gr.Row():
        deployment = console.add("playground.deployment", gr.Dropdown(label="Deployment", choices=[], allow_custom_value=True,
                                                                     elem_id="playground-deployment", scale=3))
        refresh = console.add("playground.refresh", gr.Button("Refresh", scale=1))
    about = gr.Markdown(elem_id="playground-about")
    text = console.add("playground.text", gr.Textbox(label="Input", lines=5, elem_id="playground-text",
                                                    placeholder="A document (中文也可以); generation: a JSON object of fields"))
    with gr.Row():
        explain = console.add("playground.explain", gr.Checkbox(True, label="Explain (classification: word attributions)"))
        k = console.add("playground.k", gr.Number(5, precision=0, label="k (retrieval)"))
        run = console.add("playground.run", gr.Button("Run", variant="primary", elem_id="playground-run"))
    with gr.Row():
        upload = console.add("playground.file", gr.File(label="Or drop a document (PDF, image, DOCX, HTML, .eml)",
                                                       type="filepath", elem_id="playground-file", scale=3))
        run_file = console.add("playground.run_file", gr.Button("Run on document", elem_id="playground-run-file", scale=1))
    document = console.add("playground.document", gr.Markdown("", elem_id="playground-document"))
    outputs = [console.add("playground.labels", gr.Label(label="Labels", num_top_classes=10, elem_id="playground-labels")),
               console.add("playground.highlighted", gr.HighlightedText(label="Highlighted", elem_id="playground-highlighted",
                                                                        show_legend=True)),
               console.add("playground.fields", gr.JSON(label="Fields and relations", elem_id="playground-fields")),
               console.add("playground.answer", gr.Textbox(label="Answer", lines=4, elem_id="playground-answer")),
               console.add("playground.ranked", gr.Dataframe(headers=RANK_COLUMNS, label="Ranked documents",
                                                             elem_id="playground-ranked"))]
    task = gr.State(None)
    _wire(console, deployment, refresh, about, task, (text, k, explain, run), outputs)
    _wire_document(console, deployment, task, (upload, explain, run_file), outputs, [text, document])


def _wire_document(console: Console, deployment: Any, task: Any, form: tuple, outputs: list[Any], shown: list[Any]) -> None:
    upload, explain, run_file = form

    @action
    def playground_predict_document(dep_id: str, kind: str | None, path: str | None, explained: bool, request: gr.Request):
        """Send the document to the endpoint as ``file``; the outputs, then the extracted text and what was read."""
        if not dep_id:
            raise DoctuneError("Choose a deployment first.", "invalid_request", field="deployment")
        if not path:
            raise DoctuneError("Drop a document (PDF, image, DOCX, HTML or .eml) first.", "invalid_request", field="file")
        client = console.client(request)
        dep = client.get_deployment(dep_id)
        kind = kind or client.get_model(dep["model_id"])["task"]
        if kind not in ("classification", "ner", "extraction", "summarization"):
            raise DoctuneError(f"a {kind} endpoint takes no document; type its input instead", "invalid_request", field="file")
        fields = {"explain": True} if kind == "classification" and explained else {}
        answer = call_endpoint_with_file(dep["url"], client.http.headers["Authorization"], path, fields)
        doc = answer.get("document") or {}
        drawn = render(kind, doc.get("text", ""), answer["predictions"][0])
        return [*(gr.update(value=drawn.get(name), visible=name in SHOWN.get(kind, {"text"})) for name in OUTPUTS),
                doc.get("text", ""), document_markdown(doc)]

    run_file.click(playground_predict_document, [deployment, task, upload, explain], [*outputs, *shown],
                   api_name="playground_predict_document")


def _wire(console: Console, deployment: Any, refresh: Any, about: Any, task: Any, form: tuple, outputs: list[Any]) -> None:
    text, k, explain, run = form

    def listed(request: gr.Request):
        deps = console.client(request).list_deployments(state="running", limit=200)
        return gr.update(choices=[(f"{d['name']} ({d['id']})", d["id"]) for d in deps])

    @action
    def playground_refresh(request: gr.Request):
        return listed(request)

    @action
    def playground_deployment(dep_id: str, request: gr.Request):
        if not dep_id:
            return ["", None]
        client = console.client(request)
        dep = client.get_deployment(dep_id)
        kind = client.get_model(dep["model_id"])["task"]
        return [f"**{kind}** endpoint `{dep['url']}` · model {dep['model_id']} · {dep['status']}", kind]

    @action
    def playground_predict(dep_id: str, kind: str | None, typed: str, top_k: float, explained: bool, request: gr.Request):
        """Call the endpoint for one input; returns each output's value, shown only where the task uses it."""
        if not dep_id:
            raise DoctuneError("Choose a deployment first.", "invalid_request", field="deployment")
        client = console.client(request)
        dep = client.get_deployment(dep_id)
        kind = kind or client.get_model(dep["model_id"])["task"]
        answer = call_endpoint(dep["url"], client.http.headers["Authorization"], request_body(kind, typed, top_k, explained))
        shown = render(kind, (typed or "").strip(), answer["predictions"][0])
        return [gr.update(value=shown.get(name), visible=name in SHOWN.get(kind, {"text"})) for name in OUTPUTS]

    refresh.click(playground_refresh, None, [deployment], api_name="playground_refresh")
    deployment.change(playground_deployment, [deployment], [about, task], api_name="playground_deployment")
    run.click(playground_predict, [deployment, task, text, k, explain], outputs, api_name="playground_predict")
    text.submit(playground_predict, [deployment, task, text, k, explain], outputs)
    console.on_sign_in(listed, [deployment])
