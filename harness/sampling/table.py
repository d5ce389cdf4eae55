"""The sampling-parameter mapping table, as data: every field of the tunix/sglang-jax integration design's
sampling table (vLLM's SamplingParams of its time, DESIGN_FIELDS) and of the installed
engines' parameter classes, with the canonical counterpart, each side's field and default, the
conversion and a status.

Statuses (per engine side, and the row's `status` = the most serious of vLLM's and sglang-jax's):

- equivalent: same meaning; sent as is.
- converted: same meaning, different spelling or convention; the mapping converts
  (harness.sampling.mapping).
- one-sided: only this side has it; the harness does not send it (reason given).
- unsupported by design: deliberately not part of the canonical spec (reason given); a spec cannot
  set it, so nothing is dropped silently.
- differs: maps by name but means something else in some specs (reason given; an explicit mapping
  issue and a sampling_distribution finding).
- engine bug: the engine accepts the field and ignores it, or mishandles it (measured; the
  behavioural checks fail on it).
- absent: the field is in the design table but not in the installed version (renamed or removed).

`table_rows(snapshots)` is what `sampling_table.json` holds; `coverage_problems(introspected)` is what
the per-engine tests and `python -m harness.sampling.introspect --check` fail on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

_NO = object()  # "no field on this side"

STATUS_RANK = {"equivalent": 0, "converted": 1, "one-sided": 2, "absent": 2, "unsupported by design": 3,
               "differs": 4, "engine bug": 5, "": -1}


@dataclass(frozen=True)
class Side:
    fields: tuple[str, ...]  # engine field names this row covers ('request:' prefix: sglang-jax request-level)
    default: Any = None
    status: str = "equivalent"
    note: str = ""

    @property
    def label(self) -> str:
        return " + ".join(self.fields) if self.fields else ""


def S(fields: str | tuple[str, ...] | None = None, default: Any = None, status: str = "equivalent",
      note: str = "") -> Side:
    if fields is None:
        return Side((), None, status or "", note)
    return Side((fields,) if isinstance(fields, str) else tuple(fields), default, status, note)


NONE = Side((), None, "", "")


@dataclass(frozen=True)
class Row:
    canonical: str  # SamplingSpec field, or "(what)" for a harness-level or unsupported concept
    vllm: Side
    sglang: Side
    tunix: Side
    conversion: str
    reason: str
    seed: tuple[str, ...] = ()  # the names this row covers in the design table
    seed_note: str = ""  # what the design table said about it (tunix column / sglang_jax column)
    checked_by: str = ""  # the behavioural check that proves the row
    #: how the reference applies the field (harness/processing.py, harness/sampling/expect.py), for the checks
    #: that treat fields by kind (`acting`): "filter" truncates the sampled distribution (greedy ignores it),
    #: "logits" changes the logits before temperature (sampled and greedy), "length" bounds the completion's
    #: length, "stop" decides which token ends it; "" for none of these
    acts: str = ""

    @property
    def status(self) -> str:
        return max((self.vllm.status, self.sglang.status), key=lambda s: STATUS_RANK.get(s, 0)) or "equivalent"


# ------------------------------------------------------------------------------------------ the rows
ROWS: list[Row] = [
    # ---------------------------------------------------------------- the canonical spec's fields
    Row("n", S("n", 1), S("n", 1, "converted", "harness: n requests with derived seeds"),
        S(None, None, "converted", "generate(..., n=) / sampler multi_sampling"),
        "n -> n; sglang-jax: n > 1 becomes n requests, sample j seeded derive_seed(seed, j) "
        "(0.0.2's native n returns n identical copies, sglang-jax defect no. 13); vLLM child j gets seed + j",
        "RolloutConfig has no n; tunix's VllmSampler keeps only the first of n samples",
        ("n",), "tunix: multi_sampling=1, to check; sglang_jax: n:int=1", "n_samples, sampling_distribution"),
    Row("temperature", S("temperature", 1.0), S("temperature", 1.0), S("temperature", 0.9, "converted"),
        "same value; 0 = greedy everywhere. Canonical rejects 0 < T < 0.01 and T > 2 so no engine "
        "reinterprets it; tunix: T = 0 goes with top_p None",
        "vLLM raises 0 < T < 0.01 to 0.01 and rejects T > 2; sglang-jax is greedy below 1e-6 (top_k := 1); "
        "tunix's vanilla sampler divides by zero at T = 0 with top_p 1.0",
        ("temperature",), "get_default_sampling_params(); sglang_jax temperature:float=1.0",
        "sampling_distribution (T=0.7, T=1.0)"),
    Row("top_p", S("top_p", 1.0),
        S("top_p", 1.0, "differs", "top-p over the full distribution, before the top-k/min-p cut"),
        S("top_p", 1.0, "converted", "None at T = 0; None = unset (generation_config decides)"),
        "same value; greedy -> tunix None",
        "alone: same set of tokens. With top_k or min_p, vLLM applies top_p to the renormalised remainder, "
        "sglang-jax to the full distribution: different distributions (measured TV up to 0.19 on the tiny model)",
        ("top_p",), "get_default_sampling_params(); sglang_jax top_p:float=1.0",
        "sampling_distribution (top_p, top_k+top_p, min_p+top_p)", acts="filter"),
    Row("top_k", S("top_k", 0, "converted", "0 or -1 = off"), S("top_k", -1, "converted", "-1 = off, 0 rejected"),
        S("top_k", None, "converted", "None = unset: generation_config decides"),
        "None -> vLLM 0 / sglang-jax -1 / tunix the rollout engine's explicit off (0 or -1), never None",
        "three spellings of 'off'; tunix None would let a model's generation_config (e.g. top_k 20) apply",
        ("top_k",), "get_default_sampling_params(); sglang_jax says top_k:int=1.0 (it is -1)",
        "sampling_distribution (top_k)", acts="filter"),
    Row("min_p", S("min_p", 0.0), S("min_p", 0.0),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs; sglang-jax rollout: cannot"),
        "same value (relative to the most likely token, after temperature)",
        "same token set alone and with top_k (intersection); with top_p see top_p",
        ("min_p",), "get_default_sampling_params(); sglang_jax min_p:float=0.0",
        "sampling_distribution (min_p)", acts="filter"),
    Row("seed", S("seed", None), S("sampling_seed", None, "converted", "needs enable_deterministic_sampling"),
        S("seed", None, "equivalent", "an int (a jax.Array seed is donated and deleted)"),
        "seed -> seed / sampling_seed (per sample: derive_seed) / seed",
        "sglang-jax honours sampling_seed only in deterministic mode (the harness runs it on; a run without it "
        "gets an explicit 'seed ignored' verdict). Seeds reproduce within an engine, never across engines",
        ("seed",), "tunix sets but not used when sampling", "seed_determinism, sampling_distribution"),
    Row("max_tokens", S("max_tokens", 16), S("max_new_tokens", 128, "converted"),
        S("max_tokens_to_generate", 64, "converted"),
        "always sent explicitly", "defaults differ (16 / 128 / 64): no engine default decides a length",
        ("max_tokens",), "tunix: max_generation_steps; sglang_jax: max_new_tokens",
        "sampling_effects, eos_policy", acts="length"),
    Row("min_tokens", S("min_tokens", 0), S("min_new_tokens", 0, "converted"),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs"),
        "min_tokens -> min_tokens / min_new_tokens", "EOS and stop tokens are suppressed before min_tokens",
        ("min_tokens",), "sglang_jax min_new_tokens:int=0, to check", "sampling_effects (min_tokens)", acts="length"),
    Row("stop_token_ids", S("stop_token_ids", None), S("stop_token_ids", None),
        S("eos_tokens", None, "converted", "tunix's samplers send [tokenizer.eos_id()]"),
        "list of ids; the model's EOS is added by each engine (unless ignore_eos)",
        "a stop token that ends a completion is included in its ids (sglang-jax needs no_stop_trim and "
        "skip_special_tokens False for that: keep_stop_token workaround)",
        ("stop_token_ids",), "tunix: [self.tokenizer.eos_id()]; sglang_jax: None: to check",
        "sampling_effects (stop_token_ids), eos_policy", acts="stop"),
    Row("ignore_eos", S("ignore_eos", False), S("ignore_eos", False),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs"),
        "same value", "", ("ignore_eos",), "tunix: False, to check", "sampling_effects (ignore_eos)", acts="stop"),
    Row("repetition_penalty", S("repetition_penalty", 1.0),
        S("repetition_penalty", 1.0, "engine bug", "0.0.2: validated, never applied (no penalizer); SglangJaxRollout's "
                                                  "compat repetition_penalty_applied adds one"),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs, else generation_config decides"),
        "same value (vLLM: over prompt and output tokens)",
        "sglang-jax 0.0.2 has presence/frequency/min-new-tokens penalizers only: repetition_penalty has no effect",
        ("repetition_penalty",), "tunix: to support", "sampling_effects (repetition_penalty)", acts="logits"),
    Row("presence_penalty", S("presence_penalty", 0.0), S("presence_penalty", 0.0),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs"),
        "same value (output tokens only, subtracted once per present token)", "",
        ("presence_penalty",), "tunix: lack, not to support because tunix does not use it",
        "sampling_effects (presence_penalty)", acts="logits"),
    Row("frequency_penalty", S("frequency_penalty", 0.0), S("frequency_penalty", 0.0),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs"),
        "same value (output tokens only, subtracted per occurrence)", "",
        ("frequency_penalty",), "tunix: lack, not to support because tunix does not use it",
        "sampling_effects (frequency_penalty)", acts="logits"),
    Row("logit_bias", S("logit_bias", None),
        S("logit_bias", None, "engine bug", "str keys; 0.0.2: validated, never applied; SglangJaxRollout's compat "
                                          "logit_bias_applied adds a penalizer"),
        S(None, None, "one-sided", "vLLM rollout: rollout_vllm_sampling_kwargs"),
        "{int: float} -> vLLM {int: float} (None if empty) / sglang-jax {str: float}",
        "canonical biases lie in [-100, 100] (vLLM's from_optional clamps to that); sglang-jax 0.0.2 "
        "never adds the bias to the logits",
        ("logit_bias",), "tunix: None, not to support because tunix does not use it",
        "sampling_effects (logit_bias)", acts="logits"),
    Row("top_logprobs", S("logprobs", None, "converted", "k; the sampled token is always added (up to k+1)"),
        S(("request:return_logprob", "request:top_logprobs_num"), (False, None), "converted",
          "request-level, not a sampling field"),
        S("return_logprobs", False, "converted", "a bool: the sampled token's logprob only"),
        "top_logprobs k -> vLLM logprobs=k / sglang-jax return_logprob=True, top_logprobs_num=k / tunix "
        "return_logprobs=k>0",
        "every backend returns the sampled token's logprob; the logprob *mode* differs (vLLM processed, "
        "sglang-jax temperature-scaled, not renormalised): harness.spec.LogprobMode",
        ("logprobs",), "tunix sets 1; sglang_jax: return_logprob = true, top_logprobs_num = 1",
        "completion_logprobs, logprob_mode"),
    # ---------------------------------------------------------------- fixed by the harness (not in the spec)
    Row("(prompt logprobs)", S("prompt_logprobs", None, "converted", "separate request (default) or inline 1"),
        S("request:logprob_start_len", None, "converted", "0 = one entry per prompt token"),
        S(None, None, "converted", "tunix asks prompt_logprobs=1 when return_logprobs"),
        "always asked by the harness: vLLM a separate prompt-logprob request (prefix cache read honestly), "
        "sglang-jax logprob_start_len=0",
        "prompt logprobs are raw log_softmax in both; the first prompt token has none",
        ("prompt_logprobs",), "tunix sets 1; sglang_jax: return_logprob, top_logprobs_num = 1, logprob_start_len = 0",
        "prompt_logprobs"),
    Row("(token-id logprobs)", S("logprob_token_ids", None, "unsupported by design"),
        S("request:token_ids_logprob", None, "unsupported by design"), NONE,
        "not sent", "logprobs of chosen token ids: the harness scores by teacher forcing instead",
        ("allowed_token_ids",), "the design table listed token_ids_logprob under allowed_token_ids (a different thing)"),
    Row("(prompt token-id logprobs)", S("prompt_logprob_token_ids", None, "one-sided"), NONE, NONE,
        "not sent", "vLLM-only variant of prompt logprobs for given ids"),
    Row("(prompt logprob start)", S("prompt_logprob_start", None, "one-sided"), NONE, NONE,
        "not sent", "vLLM-only; sglang-jax's logprob_start_len is in the prompt-logprobs row"),
    Row("(flat logprobs)", S("flat_logprobs", False, "one-sided"), NONE, NONE,
        "not sent (False)", "output container format only"),
    Row("(detokenize)", S("detokenize", True, "converted", "the harness sends True"),
        S(None, None, "one-sided", "always detokenizes"), S(None, None, "converted", "tunix sends False"),
        "True (text is for the report; checks compare ids)", "token ids are unaffected",
        ("detokenize",), "tunix: False; sglang_jax: to support"),
    Row("(skip special tokens)", S("skip_special_tokens", True, "converted", "True: text only"),
        S("skip_special_tokens", True, "converted", "False: 0.0.2 drops special ids from output_ids (sglang-jax defect no. 10)"),
        S(None, None, "converted", "tunix sends True"),
        "vLLM True (ids unaffected) / sglang-jax False (keep_stop_token workaround)",
        "in sglang-jax 0.0.2 it also removes special tokens (EOS) from the ids, not just the text",
        ("skip_special_tokens",), "tunix: True; sglang_jax: skip_special_tokens:bool=True, to check", "eos_policy"),
    Row("(spaces between special tokens)", S("spaces_between_special_tokens", True),
        S("spaces_between_special_tokens", True), NONE,
        "engine default (True) on both", "detokenisation only",
        ("spaces_between_special_tokens",), "sglang_jax spaces_between_special_tokens:bool=True, to check"),
    Row("(keep stop string)", S("include_stop_str_in_output", False, "one-sided", "text only; stop ids always kept"),
        S("no_stop_trim", False, "converted", "True (keep_stop_token workaround)"),
        S(None, None, "converted", "tunix's VllmSampler sends include_stop_str_in_output=True"),
        "harness convention: the stop token stays in ids and logprobs (vLLM does so for ids whatever this flag)",
        "vLLM's flag affects text only; sglang-jax's no_stop_trim also keeps the matched stop token in output_ids",
        ("include_stop_str_in_output",), "tunix: lack, not to support because tunix uses token_ids", "eos_policy"),
    Row("(stop strings)", S("stop", None, "unsupported by design"), S("stop", None, "unsupported by design"), NONE,
        "not in the canonical spec: stop on token ids (stop_token_ids)",
        "stop strings depend on detokenisation and are cut from text differently; RL rollouts compare ids",
        ("stop",), "tunix: None, to check"),
    Row("(output kind)", S("output_kind", "RequestOutputKind.CUMULATIVE", "one-sided"),
        S("request:stream", False, "one-sided"), NONE,
        "not sent: batch calls return cumulative outputs", "streaming only", ("output_kind",),
        "tunix: lack, but output is cumulative"),
    Row("(stream interval)", S("stream_interval", None, "unsupported by design"),
        S("stream_interval", None, "unsupported by design"), NONE, "not sent", "streaming only"),
    Row("(constrained decoding)", S("structured_outputs", None, "unsupported by design"),
        S(("json_schema", "regex", "ebnf", "structural_tag"), (None, None, None, None), "unsupported by design"),
        NONE, "not in the canonical spec",
        "grammar-constrained decoding is not used by tunix RL rollouts; vLLM renamed guided_decoding to "
        "structured_outputs", ("guided_decoding",), "tunix: lack, not to support"),
    Row("(allowed token ids)", S("allowed_token_ids", None, "unsupported by design"), NONE, NONE,
        "not in the canonical spec", "vocabulary restriction; no sglang-jax counterpart (logit_bias -100 instead)"),
    Row("(bad words)", S(("bad_words", "_bad_words_token_ids"), (None, None), "unsupported by design"), NONE, NONE,
        "not in the canonical spec", "no sglang-jax counterpart; _bad_words_token_ids is derived from bad_words",
        ("bad_words", "_bad_words_token_ids"), "tunix: lack, not to support"),
    Row("(extra args)", S("extra_args", None, "unsupported by design"), NONE, NONE,
        "not in the canonical spec", "free-form arguments for custom logits processors",
        ("extra_args",), "tunix: lack, not to support"),
    Row("(thinking budget)", S("thinking_token_budget", None, "unsupported by design"), NONE, NONE,
        "not in the canonical spec", "reasoning-model feature, no sglang-jax counterpart"),
    Row("(repetition detection)", S("repetition_detection", None, "unsupported by design"), NONE, NONE,
        "not in the canonical spec", "vLLM-only early stop on loops"),
    Row("(watermarking)", S(("watermarking", "_watermarking_skipped"), (None, False), "unsupported by design"),
        NONE, NONE, "not in the canonical spec", "changes the distribution on purpose"),
    Row("(MoE routing trace)", S("routed_experts_prompt_start", 0, "one-sided"), NONE, NONE,
        "not sent", "introspection of MoE routing"),
    Row("(decode trace)", S("trace_decode_token_ids", None, "one-sided"), NONE, NONE, "not sent", "debug tracing"),
    Row("(vLLM internals)", S(("_eos_token_id", "_all_stop_token_ids", "output_text_buffer_length", "skip_clone",
                               "skip_reading_prefix_cache"), (None, "<factory>", 0, False, None), "one-sided"),
        NONE, NONE, "derived by vLLM, never sent",
        "state vLLM derives (EOS and stop sets from generation_config, stop-string buffer; prefix-cache reads are "
        "skipped when prompt logprobs are asked: why the harness asks them separately)",
        ("output_text_buffer_length",), "tunix: lack, not to support because tunix does not use it"),
    # ---------------------------------------------------------------- design-table fields gone from vLLM 0.32
    Row("(best of)", S(None, None, "absent", "removed from vLLM"), NONE, NONE, "-", "no engine here has it; beam "
        "search is not used by tunix RL", ("best_of", "_real_n"), "tunix: lack, not to support"),
    Row("(per-request logits processors)", S(None, None, "absent", "now class-based on LLM(...)"), NONE, NONE, "-",
        "neither engine takes per-request callables now", ("logits_processors",), "tunix: lack, not to support"),
    Row("(truncate prompt tokens)", S(None, None, "absent", "now tokenization_kwargs"), NONE,
        S("max_prompt_length", 64, "converted", "tunix truncates prompts to it"),
        "prompts are sent whole; a tunix mapping sets max_prompt_length >= the longest prompt",
        "silent truncation would change what was asked", ("truncate_prompt_tokens",),
        "tunix: lack, disabled with None"),
    # ---------------------------------------------------------------- tunix-only sampling settings
    Row("(tunix: vLLM extra sampling kwargs)", NONE, NONE,
        S("rollout_vllm_sampling_kwargs", {}, "converted", "carries min_p, min_tokens, ignore_eos, penalties, "
          "logit_bias"),
        "the canonical fields RolloutConfig lacks, for a vLLM rollout (always sent, neutral values too)",
        "without them the model's generation_config would decide"),
    Row("(tunix: vLLM logprobs mode)", NONE, NONE, S("rollout_vllm_logprobs_mode", "processed_logprobs", "converted"),
        "processed_logprobs", "what tunix's VllmRollout asks (the harness's VllmRunner default too)"),
    Row("(tunix: sglang-jax deterministic sampling)", NONE, NONE,
        S("rollout_sglang_jax_enable_deterministic_sampling", False, "converted", "True when a seed is given"),
        "seed set -> True", "sglang-jax ignores sampling_seed without it; unseeded without it hits sglang-jax defect no. 9"),
    Row("(tunix: sglang-jax sort for top-p/k/min-p)", NONE, NONE,
        S("rollout_sglang_jax_use_sort_for_toppk_minp", True, "one-sided"),
        "not sent", "an sglang-jax implementation switch newer than 0.0.2"),
]

#: the design table (the field list of the tunix SglangJaxRollout design proposal), first column, in its order
DESIGN_FIELDS: tuple[str, ...] = (
    "n", "best_of", "_real_n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens", "logits_processors",
    "include_stop_str_in_output", "truncate_prompt_tokens", "output_kind", "output_text_buffer_length",
    "guided_decoding", "logit_bias", "allowed_token_ids", "extra_args", "bad_words", "_bad_words_token_ids",
)

def _dialect(engine: str):
    """ENGINE's sampling dialect (its backend module declares which column is its own, and what it reads)."""
    from harness.sampling.mapping import dialect

    return dialect(engine)


def _side(row: Row, engine: str) -> Side:
    return getattr(row, _dialect(engine).column)


def covered(engine: str) -> dict[str, tuple[Row, Any]]:
    """engine field -> (row, the table's stated default)."""
    out: dict[str, tuple[Row, Any]] = {}
    for row in ROWS:
        side = _side(row, engine)
        defaults = side.default if len(side.fields) > 1 else (side.default,)
        for f, d in zip(side.fields, defaults):
            out[f] = (row, d)
    return out


def seed_coverage() -> dict[str, str]:
    """design-table field -> the canonical name of the row covering it (missing ones absent)."""
    out = {}
    for row in ROWS:
        for s in row.seed:
            out[s] = row.canonical
    return out


def coverage_problems(doc: dict) -> list[str]:
    """Problems of the table against one engine's introspection (introspect.py's JSON for one engine):
    fields it has that no row covers, fields a row names that it lacks, defaults that differ."""
    engine = doc["engine"]
    have = dict(doc["fields"])
    have.update({f"request:{k}": v for k, v in (doc.get("request_fields") or {}).items()})
    table = covered(engine)
    skip = _dialect(engine).not_sampling
    probs = []
    for f in sorted(set(have) - set(table) - set(skip)):
        probs.append(f"{engine} {doc['version']} has field {f!r} (default {have[f]!r}) that the table does not "
                     f"cover: add a row (or a side) in harness/sampling/table.py")
    for f in sorted(set(table) - set(have)):
        if not f.startswith("request:") or doc.get("request_fields"):
            probs.append(f"the table covers {engine} field {f!r} (row {table[f][0].canonical!r}), which "
                         f"{engine} {doc['version']} does not have")
    for f in sorted(set(table) & set(have)):
        want = table[f][1]
        if isinstance(want, tuple):
            want = list(want)
        if want != have[f]:
            probs.append(f"{engine} {doc['version']} field {f!r}: default {have[f]!r}, the table says {want!r}")
    return probs


def _default(side: Side) -> Any:
    if not side.fields:
        return None
    return side.default if len(side.fields) == 1 else list(side.default)


@functools.cache
def acting(*kinds: str) -> tuple[str, ...]:
    """The canonical fields whose row `acts` as one of `kinds`, in the table's order (the checks ask per record)."""
    return tuple(r.canonical for r in ROWS if r.acts and r.acts in kinds)


def table_rows(snapshots: dict[str, dict] | None = None) -> list[dict]:
    """The rows of sampling_table.json (docs/report.md's shape plus per-side statuses and notes)."""
    out = []
    for row in ROWS:
        d = {
            "canonical": row.canonical,
            "vllm_field": row.vllm.label or None, "vllm_default": _default(row.vllm),
            "sglang_field": (row.sglang.label.replace("request:", "") or None), "sglang_default": _default(row.sglang),
            "tunix_field": row.tunix.label or None, "tunix_default": _default(row.tunix),
            "conversion": row.conversion, "status": row.status, "reason": row.reason,
            "vllm_status": row.vllm.status or None, "sglang_status": row.sglang.status or None,
            "tunix_status": row.tunix.status or None,
            "notes": "; ".join(f"{k}: {s.note}" for k, s in (("vLLM", row.vllm), ("sglang-jax", row.sglang),
                                                               ("tunix", row.tunix)) if s.note),
            "design": list(row.seed), "design_said": row.seed_note, "checked_by": row.checked_by,
        }
        out.append(d)
    return out


def coverage_summary(snapshots: dict[str, dict]) -> dict:
    """How much of each class the table covers (for the report and docs)."""
    out = {"design": {"fields": len(DESIGN_FIELDS), "covered": len(set(DESIGN_FIELDS) & set(seed_coverage())),
                      "missing": sorted(set(DESIGN_FIELDS) - set(seed_coverage()))}}
    for engine, doc in snapshots.items():
        have = set(doc["fields"]) | {f"request:{k}" for k in (doc.get("request_fields") or {})}
        table = set(covered(engine))
        skip = set(_dialect(engine).not_sampling)
        out[engine] = {"version": doc["version"], "class": doc["class"], "fields": len(have),
                       "covered": len(have & table), "not_sampling": len(have & skip),
                       "problems": coverage_problems(doc)}
    return out
