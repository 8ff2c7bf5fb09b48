"""Many LoRA adapters over one copy of their base model, in one process.

:class:`AdapterPool` loads adapter exports (``tuning.merge_adapter: false``: a peft
adapter directory over a base model directory) with the task plugin's own
``load_model`` and then points every frozen base weight of the loaded model at the
one copy the pool already holds, so N adapters of the same base cost one base model
plus their own adapter weights and task heads. An adapter answers through the pool
exactly as it does loaded alone: shared tensors are only shared when they are equal.

Used by the shared base-model Serve application (``doctune.serve.multiplex``), one
pool per replica; it holds no Ray state, so unit tests and benchmarks drive it
directly. Whether a model can share a base at all is the task plugin's to say
(``doctune.tasks.check_can_serve``, which ``doctune.services.deployments`` calls when a
deployment asks for ``multiplex: true``); a pool refuses such a task again.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks import check_can_serve

__all__ = ["AdapterPool", "pick_adapter_to_evict"]

# peft's copies of the modules it trains in full (ModulesToSaveWrapper): the adapter's own
# head and the untrained head the base model was loaded with; never shared
_ADAPTER_OWNED = {"modules_to_save", "original_module"}
# files of an export that are not the tokenizer's (the rest say which tokenizer it is)
_NOT_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npy", ".jsonl", ".md")
_NOT_TOKENIZER_NAMES = {"adapter_config.json", "doctune.json", "config.json", "generation_config.json"}


def pick_adapter_to_evict(loaded: list[tuple[str, str]], tenant: str, capacity: int, share: int) -> str | None:
    """Which loaded adapter makes room for one of ``tenant``'s, or None while there is room.

    ``loaded``: ``(model_id, tenant)`` of the adapters a replica holds, least recently used
    first; ``capacity``: most adapters a replica holds; ``share``: adapters each tenant is
    guaranteed. A tenant holding its share or more recycles its own least recently used
    adapter, so no tenant grows past its share by evicting another's. Below its share it takes
    the least recently used adapter of a tenant holding more than its share; when no tenant
    does (more tenants than the replica has shares), of the tenant holding most (itself first
    among equals)."""
    if len(loaded) < capacity:
        return None
    counts: dict[str, int] = {}
    for _, owner in loaded:
        counts[owner] = counts.get(owner, 0) + 1
    if counts.get(tenant, 0) >= share:
        return next(m for m, owner in loaded if owner == tenant)
    over = [m for m, owner in loaded if counts[owner] > share]
    if over:
        return over[0]
    most = max(counts.values())
    if counts.get(tenant, 0) == most:
        return next(m for m, owner in loaded if owner == tenant)
    return next(m for m, owner in loaded if counts[owner] == most)


class AdapterPool:
    """Adapter models of one task and one base model, sharing that base model's weights.

    ``load(model_id, path)`` returns the model to predict with (the plugin's ``load_model``
    result); ``unload(model_id)`` forgets it; ``memory()`` counts the bytes held. Safe to
    call from several threads (a replica loads in a worker thread while it answers).
    """

    def __init__(self, plugin: Any) -> None:
        check_can_serve(plugin, multiplex=True)  # the deploy-time refusal, for this task
        self.plugin = plugin
        self._heads = set(plugin.head_modules()) if callable(getattr(plugin, "head_modules", None)) else set()
        self._shared: dict[str, Any] = {}  # base weight name (peft wrappers stripped) -> the one tensor
        self._models: dict[str, Any] = {}
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ adapters
    def load(self, model_id: str, path: str) -> Any:
        """Load the export at ``path`` with the plugin and share its base weights with the pool's."""
        import torch

        model = self.plugin.load_model(path)
        if not isinstance(model, torch.nn.Module):
            raise DoctuneError(f"{self.plugin.name} models load as {type(model).__name__}, not a torch module; "
                               "they cannot share a base model. Deploy with multiplex: false",
                               "invalid_spec", field="multiplex")
        with self._lock:
            self._share(model)
            self._models[model_id] = model
        _return_freed_memory()  # the base weights just loaded and dropped
        return model

    def unload(self, model_id: str) -> bool:
        """Forget an adapter (its memory goes once no request still holds it); the shared base
        weights stay for the next one. False when it was not loaded."""
        with self._lock:
            model = self._models.pop(model_id, None)
        if model is None:
            return False
        del model
        _return_freed_memory()
        return True

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def tokenizer(self, path: str) -> Any:
        """The export's tokenizer, one object for every export whose tokenizer files are the same
        (adapters of one base model ship the base model's tokenizer)."""
        from transformers import AutoTokenizer

        digest = hashlib.sha256()
        for f in sorted(Path(path).iterdir()):
            if f.is_file() and f.name not in _NOT_TOKENIZER_NAMES and not f.name.endswith(_NOT_TOKENIZER_SUFFIXES):
                digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        key = digest.hexdigest()
        with self._lock:
            hit = self._tokenizers.get(key)
        if hit is not None:
            return hit
        tok = AutoTokenizer.from_pretrained(path)
        with self._lock:
            return self._tokenizers.setdefault(key, tok)

    def memory(self) -> dict[str, Any]:
        """Bytes of distinct tensor storage held: ``shared`` (the base weights, counted once),
        ``adapters`` ({model_id: bytes only that adapter holds}) and ``total`` (all of it)."""
        with self._lock:
            shared = _storages(self._shared.values())
            everything = dict(shared)
            adapters = {}
            for model_id, model in self._models.items():
                own = {ptr: n for ptr, n in _storages(_tensors(model)).items() if ptr not in shared}
                adapters[model_id] = sum(own.values())
                everything.update(own)
        return {"shared": sum(shared.values()), "adapters": adapters, "total": sum(everything.values())}

    # ------------------------------------------------------------------ sharing
    def _share(self, model: Any) -> None:
        """Point each base weight of ``model`` that equals the pool's copy at that copy; the first
        model's base weights become the pool's copy."""
        root = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        owned = _ADAPTER_OWNED | self._heads | set(getattr(model, "peft_config", None) or ())  # + adapter names
        seen: dict[int, Any] = {}  # id(tensor as loaded) -> what it became: tied weights stay tied
        replaced = []  # the loaded copies, alive until the walk ends so no id in ``seen`` is reused
        for module_name, module in root.named_modules(remove_duplicate=False):
            path = module_name.split(".") if module_name else []
            for slots in (module._parameters, module._buffers):
                for name, tensor in list(slots.items()):
                    if tensor is None:
                        continue
                    if id(tensor) in seen:
                        slots[name] = seen[id(tensor)]
                        continue
                    seen[id(tensor)] = tensor
                    if owned.intersection(path) or name in owned:
                        continue  # the adapter's own weights and heads
                    key = ".".join(p for p in (*path, name) if p != "base_layer")  # peft's wrapped layers
                    common = self._shared.get(key)
                    if common is None:
                        self._shared[key] = tensor
                    elif common is not tensor and _same(common, tensor):
                        slots[name] = seen[id(tensor)] = common
                        replaced.append(tensor)


def _same(a: Any, b: Any) -> bool:
    import torch

    return (type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            and torch.equal(a, b))


def _tensors(model: Any) -> list[Any]:
    out = []
    for module in model.modules():
        out.extend(t for t in module._parameters.values() if t is not None)
        out.extend(t for t in module._buffers.values() if t is not None)
    return out


def _storages(tensors: Any) -> dict[int, int]:
    """{storage address: bytes} of the distinct storages behind ``tensors`` (views counted once)."""
    out = {}
    for t in tensors:
        storage = t.untyped_storage()
        if storage.nbytes():
            out[storage.data_ptr()] = storage.nbytes()
    return out


def _return_freed_memory() -> None:
    """Hand memory freed by the allocator back to the OS (glibc keeps freed blocks otherwise),
    so a replica's resident size shows what the pool holds. Best effort; Linux only."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
