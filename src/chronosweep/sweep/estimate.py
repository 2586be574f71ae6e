"""Peak memory and running time of one trial, from its config and the model's shape: arithmetic, no torch, no weights.

Memory on the trial's device (per rank when a trial spans several GPUs) is the weights plus the largest of three
phases that never overlap: training (optimizer state, gradients, saved activations and the loss head), evaluation
(teacher-forced logits, generation's KV cache) and, for ROME/MEMIT, the locate phase (key statistics in fp64,
the target-value optimisation). What each phase holds follows what the code keeps alive:

- weights: every parameter in the trial's precision (ZeRO-3: a 1/world share; offloaded: about two layers);
- adapters (LoRA, P-tuning) are fp32 under peft's autocast unless DeepSpeed casts the module to bf16/fp16;
- torch engine: AdamW keeps two states in each trainable parameter's dtype, gradients in the same dtype;
  DeepSpeed with bf16/fp16: fp32 master weights, fp32 Adam states, fp32 and low-precision gradients, the fp32
  parts divided over ranks from ZeRO stage 1 (states), 2 (gradients), offloaded to the CPU with offload_optimizer;
- activations saved for backward, per token and decoder layer, for the layers between the lowest trainable one and
  the top: RMSNorm inputs in fp32, q/k/v/attention output, the gated MLP's three intermediates; a trainable layer
  also keeps its linear layers' inputs (measured with torch's saved-tensor hooks on SmolLM2 to within 3%);
- the loss head: logits in the trial's precision plus three fp32 [tokens, vocab] tensors (the upcast
  log-softmax and its gradients) at the top of the backward pass, the embedding gradient when it trains; on CUDA
  four more [tokens, vocab] buffers in the trial's precision (CUDA_VOCAB_COPIES, fitted to the H200 runs);
- ROME/MEMIT: C = E[k kᵀ] (mlp width²) in fp64 on the device plus the solve's workspace, every layer's fp64
  accumulator while statistics are computed (first trial per model and layer), and the target optimisation's
  activations for its rows (edits x (1 + prefixes) + KL rows) above the edited layer.

Sequence lengths come from the trial's own edits and probes (``Lengths``): tokenised when the model's
tokenizer.json is local, else characters / CHARS_PER_TOKEN.

Time is FLOPs / (peak x utilisation) for matrix work and bytes / bandwidth for token-by-token decoding; a sweep
that has earlier run dirs of the same method and model replaces the utilisation with the throughput they measured
(``dryrun``). All figures are bytes and seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from chronosweep.core.archs import arch_for
from chronosweep.core.shapes import ModelShape

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# English text in the tokenizers of these models: about this many characters per token (used without a tokenizer).
CHARS_PER_TOKEN = 3.6
# Rows per statistics forward pass and sampling batch, as editing.stats runs them.
STATS_SEQ_LEN = 128
STATS_ROWS = {"cuda": 128, "cpu": 16}
SAMPLE_BATCH = {"cuda": 128, "cpu": 32}
# DeepSpeed's default zero_optimization.reduce_bucket_size (elements).
REDUCE_BUCKET = 500_000_000
# A CUDA context and the caching allocator's slack, on top of what tensors hold.
CUDA_OVERHEAD = 600 * 2**20
# A CPU core's fp32 peak (AVX-512: two 16-wide FMA units at about 2.5 GHz), for time estimates of CPU trials.
CPU_GFLOPS_PER_CORE = 160.0
# Fixed cost of one decoder layer in one forward or backward pass (kernel launches, Python), whatever its size:
# about 1.2 ms on CUDA, from the H200 runs of SmolLM2-135M (docs/benchmarks.md), which it dominates.
LAYER_PASS_SECONDS = {"cuda": 1.2e-3, "cpu": 2e-4}
# Reading the weights from disk into memory, and starting a process (imports, CUDA start).
LOAD_BYTES_PER_S = 1.5e9
PROCESS_SECONDS = 15.0


@dataclass(frozen=True)
class Lengths:
    """Token counts of one trial's data: what sizes its batches."""

    n_edits: int
    # Longest and mean edit example (prompt + target + suffix): a training micro-batch pads to its longest.
    train_max: int
    train_mean: float
    # Probes: generated continuations (prompt lengths) and teacher-forced ones (prompt + target).
    n_generate: int
    generate_max: int
    n_teacher: int
    teacher_max: int
    # Edit prompts and subjects for ROME/MEMIT rows: longest prompt + target, and longest "{subject} is a".
    locate_max: int
    kl_max: int
    # Target tokens per edit, on average (positions the locate loss reads).
    target_mean: float
    source: str = "tokenizer"
    # Share of the evaluation's probes that are locality probes (the ones every `single` step scores again).
    locality_share: float = 0.0


@dataclass
class Device:
    """What a trial runs on: a GPU of the table (per rank) or the CPU."""

    kind: str  # "cuda" or "cpu"
    name: str = "cpu"
    memory: float = math.inf  # bytes per device
    tflops: dict = field(default_factory=dict)  # precision -> peak TFLOP/s
    bandwidth: float = 50e9  # bytes/s
    cpus: float = 1.0
    # The share of peak FLOP/s the matrix work sustains (--mfu).
    mfu: float = 0.3


@dataclass
class Memory:
    weights: float = 0.0
    adapters: float = 0.0
    optimizer: float = 0.0
    gradients: float = 0.0
    activations: float = 0.0
    loss_head: float = 0.0
    evaluation: float = 0.0
    statistics: float = 0.0
    locate: float = 0.0
    overhead: float = 0.0
    # The phase that sets the peak.
    peak_phase: str = ""
    total: float = 0.0

    def parts(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k not in ("total", "peak_phase")}


@dataclass
class Estimate:
    memory: Memory
    flops: dict[str, float]
    seconds: dict[str, float]
    trainable_params: int
    precision: str
    engine: str
    notes: list[str] = field(default_factory=list)

    @property
    def trial_seconds(self) -> float:
        return sum(self.seconds.values())


# ---------------------------------------------------------------- what a trial trains

def resolve_precision(precision: str, device: str) -> str:
    return ("bf16" if device == "cuda" else "fp32") if precision == "auto" else precision


def resolve_engine(engine: str, device: str) -> str:
    return ("deepspeed" if device == "cuda" else "torch") if engine == "auto" else engine


def _window(options, shape: ModelShape) -> list[int]:
    layers = options.window_layers() if hasattr(options, "window_layers") else None
    return list(range(shape.num_layers)) if layers is None else layers


def algorithm(method: str) -> str:
    """The published algorithm a registered method implements (rome-preserve costs what rome does)."""
    from chronosweep.editing.registry import algorithm_of

    return algorithm_of(method)


def trainable(method: str, options, shape: ModelShape) -> dict:
    """{params, adapter (extra parameters, not in the model), lowest (first layer on the gradient path),
    trained_layers, lora_modules, embedding (the input embedding / tied head trains)}."""
    arch = arch_for(shape.model_type)
    dims = shape.module_dims()
    out = {"params": 0, "adapter": False, "lowest": shape.num_layers, "trained_layers": [], "lora_modules": [],
           "embedding": False}
    if method == "lora":
        names = {"mlp": arch.mlp, "attn": arch.attn, "both": arch.mlp + arch.attn}[options.targets]
        layers = _window(options, shape)
        per_layer = sum(options.rank * (dims[n][0] + dims[n][1]) for n in names)
        out.update(params=per_layer * len(layers), adapter=True, lowest=min(layers), lora_modules=list(names),
                   trained_layers=layers)
    elif method == "ptuning":
        h, e = shape.hidden_size, options.encoder_hidden_size
        if options.encoder_type == "mlp":
            encoder = (h * e + e) + (e * e + e) + (e * h + h)
        else:  # peft's LSTM encoder: a bidirectional LSTM then a two-layer MLP head
            lstm, layers = 0, options.encoder_num_layers
            for k in range(layers):
                fan_in = h if k == 0 else 2 * e
                lstm += 2 * 4 * (e * fan_in + e * e + 2 * e)
            encoder = lstm + (2 * e * 2 * e + 2 * e) + (2 * e * h + h)
        out.update(params=options.num_virtual_tokens * h + encoder, adapter=True, lowest=0)
    elif method in ("full", "freeze"):
        layers = _window(options, shape)
        everything = method == "full" and options.layer_start is None
        if everything:
            params = shape.total_params()
        elif method == "freeze" and options.modules == "mlp":
            params = len(layers) * shape.mlp_params()
        else:
            params = len(layers) * shape.layer_params()
        out.update(params=params, lowest=0 if everything else min(layers), trained_layers=layers, embedding=everything)
    elif method == "rome":
        out.update(params=shape.down_proj_params(), lowest=options.layer)
    elif method == "memit":
        out.update(params=len(set(options.layers)) * shape.down_proj_params(), lowest=min(options.layers))
    return out


def _largest_trainable(method: str, train: dict, shape: ModelShape) -> int:
    if train["embedding"]:
        return shape.vocab_size * shape.hidden_size
    if method in ("full", "freeze"):
        return max(shape.module_params().values())
    return 0  # adapters: small matrices


# ---------------------------------------------------------------- activations

def layer_activation_bytes(shape: ModelShape, e: int, trained: bool, lora: tuple[str, ...] = (), adapter_bytes: int = 4,
                           gqa: bool = True) -> float:
    """Bytes one token leaves saved for backward in one decoder layer on the gradient path.

    gqa: sdpa reads the grouped k/v as they are (CPU, or CUDA without a padding mask); otherwise transformers
    repeats them to every head first, and the repeated copies are what is saved.
    """
    h, i, q = shape.hidden_size, shape.intermediate_size, shape.q_dim
    kv = shape.kv_dim if gqa else q
    norms = 4 if shape.model_type in ("gemma2", "gemma3_text") else (1 if shape.model_type == "falcon" else 2)
    # Norm inputs are kept in fp32 (RMSNorm upcasts); sdpa keeps q, k, v and its output.
    saved = norms * h * 4 + (2 * q + 2 * kv) * e
    saved += 3 * i * e if shape.gated else 2 * i * e
    if shape.model_type in ("gemma3_text", "qwen3"):
        saved += (q + kv) * 4  # q_norm / k_norm
    if trained:
        # Inputs of the linear layers and the normalised states the norm weights' gradients need.
        saved += (norms * h + 2 * h + i) * e
    if lora:
        dims = shape.module_dims()
        shared_input = adapter_bytes == e  # peft's cast is a no-op: q/k/v (gate/up) share one saved input
        inputs = {}
        for name in lora:
            key = dims[name][0] if shared_input and name not in ("down_proj", "o_proj") else (name, dims[name][0])
            inputs[key] = dims[name][0]
        saved += sum(inputs.values()) * adapter_bytes
    return saved


# [tokens, vocab] buffers in the trial's precision beyond the logits themselves that CUDA holds at the loss head and
# in a teacher-forced forward pass; fitted to the H200 measurements of docs/benchmarks.md (no CPU counterpart).
CUDA_VOCAB_COPIES = 4


def head_bytes_per_token(shape: ModelShape, e: int, device_kind: str = "cpu") -> float:
    """At the top of the backward pass: the logits in the trial's dtype plus three fp32 [tokens, vocab] tensors
    (log-softmax output, the gradient reaching it, the gradient it produces): 16 and 14 vocab-widths of bytes per
    token in fp32 and bf16, as measured on the CPU (VmHWM around HF's ForCausalLMLoss)."""
    extra = CUDA_VOCAB_COPIES * e if device_kind == "cuda" else 0
    return shape.vocab_size * (e + 3 * 4 + extra) + shape.hidden_size * 4


# ---------------------------------------------------------------- the estimate

def estimate_trial(cfg, shape: ModelShape, lengths: Lengths, device: Device, world_size: int = 1,
                   stats_cached: bool = False) -> Estimate:
    """Memory per device and time of one trial config (a TrialConfig) on device.

    stats_cached: ROME/MEMIT find their key statistics in the cache (else computing them is part of the peak).
    """
    method, options = algorithm(cfg.method), cfg.options
    precision = resolve_precision(cfg.precision, device.kind)
    engine = resolve_engine(cfg.engine, device.kind)
    e = BYTES[precision]
    ds = cfg.deepspeed
    stage = ds.zero_stage if engine == "deepspeed" else 0
    world = max(1, world_size)
    train = trainable(method, options, shape)
    p_train = train["params"]
    mem = Memory()
    notes: list[str] = []
    gradient = method in ("lora", "ptuning", "full", "freeze")
    # Batches are padded, so on CUDA attention gets a mask and grouped k/v are repeated before sdpa.
    gqa = device.kind != "cuda"

    # Weights.
    p_total = shape.total_params()
    mem.weights = p_total * e
    if stage == 3:
        mem.weights = (2 * shape.layer_params() * e) if ds.offload_params else p_total * e / world
    adapter_e = 4
    if engine == "deepspeed" and precision != "fp32":
        adapter_e = e  # DeepSpeed casts the whole module, adapters included
    if train["adapter"]:
        mem.adapters = p_train * adapter_e

    # Training: optimizer state and gradients.
    if gradient:
        param_e = adapter_e if train["adapter"] else e
        if engine == "torch":
            mem.optimizer = 2 * param_e * p_train
            mem.gradients = param_e * p_train
        else:
            low = precision != "fp32"
            master = 4 * p_train if low else 0.0
            adam = 8 * p_train
            fp32_grads = 4 * p_train
            share = 1 / world
            if stage >= 1:
                master, adam = master * share, adam * share
            if stage >= 2:
                fp32_grads *= share
            if ds.offload_optimizer:
                master = adam = fp32_grads = 0.0
            mem.optimizer = master + adam
            # Low-precision gradients: whole under BF16_Optimizer (stage 0); from stage 1 they pass through
            # reduce buckets of reduce_bucket_size elements.
            low_grads = p_train if stage == 0 else min(p_train, REDUCE_BUCKET)
            mem.gradients = fp32_grads + (2 * low_grads if low else 0.0)
        micro = max(1, math.ceil(options.batch_size / world))
        tokens = micro * (lengths.train_max + (options.num_virtual_tokens if method == "ptuning" else 0))
        lora = tuple(train["lora_modules"])
        acts = 0.0
        for layer in range(train["lowest"], shape.num_layers):
            in_window = layer in train["trained_layers"]
            acts += layer_activation_bytes(shape, e, trained=in_window and method in ("full", "freeze"),
                                           lora=lora if in_window else (), adapter_bytes=adapter_e, gqa=gqa)
        mem.activations = acts * tokens
        mem.loss_head = head_bytes_per_token(shape, e, device.kind) * tokens
        if train["embedding"]:
            mem.loss_head += shape.vocab_size * shape.hidden_size * e  # the tied embedding's gradient, at the head
        # The optimizer step's temporaries: foreach AdamW on CUDA makes about one copy of the trainable parameters;
        # the CPU's one-tensor-at-a-time AdamW two of the largest trainable tensor (sqrt of the second moment, the
        # step it divides).
        if device.kind == "cuda":
            step = p_train * (4 if engine == "deepspeed" else param_e)
        else:
            step = 2 * _largest_trainable(method, train, shape) * param_e
        train_phase = mem.optimizer + max(mem.activations + mem.loss_head, mem.gradients + step)
    else:
        train_phase = 0.0

    # Evaluation (after the edit: the optimizer is gone, the adapters stay).
    virtual = options.num_virtual_tokens if method == "ptuning" else 0
    eb = cfg.eval.batch_size
    teacher = min(eb, lengths.n_teacher) * (lengths.teacher_max + virtual)
    gen_rows = min(eb, lengths.n_generate)
    kv_cache = 2 * shape.num_layers * shape.kv_dim * e * gen_rows * (lengths.generate_max + virtual + cfg.eval.max_new_tokens)
    # A teacher-forced pass holds two logits-sized buffers on the CPU (measured: VmHWM around the evaluation's
    # teacher_forced_top_tokens on SmolLM2) and an fp32 one besides its logits on CUDA (fitted, as above).
    logit_bytes = e + 4 if device.kind == "cuda" else 2 * e
    mem.evaluation = max(teacher * shape.vocab_size * logit_bytes + teacher * shape.intermediate_size * e * 2,
                         kv_cache + gen_rows * shape.vocab_size * 4)

    # ROME / MEMIT.
    locate_phase = 0.0
    if method in ("rome", "memit"):
        width = shape.intermediate_size
        layers = [options.layer] if method == "rome" else list(options.layers)
        top = max(layers)
        # Computing statistics (a trial that finds them cached skips it): an fp64 accumulator per layer plus a
        # forward of STATS_ROWS rows, after sampling the corpus by generation.
        rows = STATS_ROWS[device.kind] * STATS_SEQ_LEN
        stats_build = len(layers) * width * width * 8 + rows * (shape.intermediate_size * 3 + shape.hidden_size * 4) * e
        sample_rows = SAMPLE_BATCH[device.kind]
        sampling = (2 * shape.num_layers * shape.kv_dim * e * sample_rows * STATS_SEQ_LEN
                    + sample_rows * shape.vocab_size * 4)
        # Solving with C: C in fp64 and the solve's workspace (MEMIT also forms lambda*C + K Kᵀ).
        mem.statistics = (2 if method == "rome" else 3) * width * width * 8
        n_ctx, ctx_len, _ = contexts(options)
        per_edit_rows = 1 + n_ctx
        n_batch = 1 if method == "rome" else min(options.batch_size, lengths.n_edits)
        length = lengths.locate_max + (ctx_len + 2 if n_ctx else 0)
        row_tokens = n_batch * (per_edit_rows * length + lengths.kl_max)
        start = options.layer if method == "rome" else top + 1
        path = sum(layer_activation_bytes(shape, e, trained=False, gqa=gqa) for _ in range(start, shape.num_layers))
        positions = n_batch * (per_edit_rows * lengths.target_mean + 1)
        # The rows' recorded inputs at the edit site and the final hidden states are kept across the steps.
        kept = row_tokens * shape.hidden_size * e * 3
        mem.locate = row_tokens * path + positions * shape.vocab_size * 4 * 3 + kept
        locate_phase = mem.statistics + mem.locate
        if not stats_cached:
            locate_phase = max(locate_phase, stats_build, sampling)
            notes.append("ROME/MEMIT memory includes computing the key statistics (the first trial per model and "
                         "layer); a trial that finds them cached needs less")

    phases = {"training": train_phase, "evaluation": mem.evaluation, "locate": locate_phase}
    mem.peak_phase = max(phases, key=phases.get)
    if device.kind == "cuda":
        mem.overhead = CUDA_OVERHEAD
    mem.total = mem.weights + mem.adapters + phases[mem.peak_phase] + mem.overhead

    flops, seconds = _time(cfg, shape, lengths, device, precision, train, world)
    return Estimate(memory=mem, flops=flops, seconds=seconds, trainable_params=int(p_train), precision=precision,
                    engine=engine, notes=notes)


# ---------------------------------------------------------------- time

def matmul_params(shape: ModelShape, layers: range | list[int] | None = None) -> float:
    """Parameters that take part in matrix products per token: the given layers (default all) and the LM head."""
    layers = range(shape.num_layers) if layers is None else layers
    return len(layers) * shape.layer_params() + shape.vocab_size * shape.hidden_size


def contexts(options) -> tuple[int, int, int]:
    """ROME/MEMIT's context templates: (texts put before each prompt, the longest in tokens, tokens generated one
    at a time to sample them: each [length, count] group is sampled as one batch)."""
    pairs = [tuple(p) for p in (options.context_templates or [])]
    return sum(c for _, c in pairs), max((n for n, _ in pairs), default=0), sum(n for n, _ in pairs)


def work(cfg, shape: ModelShape, lengths: Lengths, device_kind: str) -> dict[str, float]:
    """What each phase does: FLOPs of matrix work (edit, edit_fp64, eval, stats) and passes, counted in decoder
    layers a forward or backward pass goes through (edit_layer_passes, eval_layer_passes, stats_layer_passes), each
    of which reads that layer's weights once and pays a fixed launch cost."""
    method, options = algorithm(cfg.method), cfg.options
    train = trainable(method, options, shape)
    layers_n = shape.num_layers
    out: dict[str, float] = {"edit": 0.0, "edit_fp64": 0.0, "eval": 0.0, "stats": 0.0, "edit_layer_passes": 0.0,
                             "eval_layer_passes": 0.0, "stats_layer_passes": 0.0}
    p_all = matmul_params(shape)
    if method in ("lora", "ptuning", "full", "freeze"):
        virtual = options.num_virtual_tokens if method == "ptuning" else 0
        tokens = options.epochs * lengths.n_edits * (lengths.train_mean + virtual)
        path = matmul_params(shape, range(train["lowest"], layers_n))
        out["edit"] = tokens * (2 * p_all + 2 * path + 2 * train["params"])
        # Under single and sequential every edit trains on its own: one step per edit and epoch.
        per_step = options.batch_size if cfg.protocol == "batch" else 1
        steps = options.epochs * math.ceil(lengths.n_edits / per_step)
        out["edit_layer_passes"] = steps * (layers_n + (layers_n - train["lowest"]))
    else:
        steps = options.v_num_grad_steps
        n_pref, ctx_len, ctx_tokens = contexts(options)
        length = lengths.locate_max + (ctx_len + 2 if n_pref else 0)
        row_tokens = lengths.n_edits * ((1 + n_pref) * length + lengths.kl_max)
        edited = [options.layer] if method == "rome" else list(options.layers)
        start = options.layer if method == "rome" else max(edited) + 1
        # Each step runs the rows through the layers above the site and back; the head only at the target and KL
        # positions.
        above = (layers_n - start) * shape.layer_params()
        positions = lengths.n_edits * ((1 + n_pref) * lengths.target_mean + 1)
        head = shape.vocab_size * shape.hidden_size
        out["edit"] = (steps * (row_tokens * 4 * above + positions * 4 * head)
                       + row_tokens * 2 * p_all * (1 + len(edited)))
        width = shape.intermediate_size
        out["edit_fp64"] = len(edited) * (2 / 3) * width**3 * (1 if method == "memit" else lengths.n_edits)
        # Target optimisation: ROME one edit at a time, MEMIT a batch at a time, through the layers above the site
        # and back; then the key-recording passes; and generating the context prefixes token by token.
        one_at_a_time = method == "rome" or cfg.protocol != "batch"
        groups = lengths.n_edits if one_at_a_time else math.ceil(lengths.n_edits / options.batch_size)
        out["edit_layer_passes"] = (groups * steps * 2 * (layers_n - start) + groups * 3 * layers_n
                                    + len(edited) * groups * layers_n + ctx_tokens * layers_n)
        # Statistics: the corpus forward up to the deepest layer, after sampling it token by token.
        samples = options.stats_samples
        deepest = max(edited) + 1
        out["stats"] = samples * 2 * matmul_params(shape, range(0, deepest)) + samples * len(edited) * 2 * width**2
        rows = STATS_ROWS[device_kind] * STATS_SEQ_LEN
        out["stats_layer_passes"] = math.ceil(samples / rows) * deepest
        if options.stats_corpus == "model":
            out["stats"] += samples * 2 * p_all
            out["stats_layer_passes"] += (math.ceil(samples / STATS_SEQ_LEN / SAMPLE_BATCH[device_kind])
                                          * STATS_SEQ_LEN * layers_n)
    virtual = options.num_virtual_tokens if method == "ptuning" else 0
    out["eval"] = 2 * p_all * (lengths.n_teacher * (lengths.teacher_max + virtual)
                               + lengths.n_generate * (lengths.generate_max + virtual))
    eb = cfg.eval.batch_size
    generate_batches = math.ceil(lengths.n_generate / eb) if lengths.n_generate else 0
    teacher_batches = math.ceil(lengths.n_teacher / eb) if lengths.n_teacher else 0
    out["eval_layer_passes"] = (generate_batches * cfg.eval.max_new_tokens + teacher_batches) * layers_n
    factor = eval_repeats(cfg, lengths)
    out["eval"] *= factor
    out["eval_layer_passes"] *= factor
    return out


def eval_repeats(cfg, lengths: Lengths) -> float:
    """How many times the whole evaluation's work the protocol does: single scores each edit's probes once and
    every locality probe after every edit; sequential scores the locality probes and the edits applied so far at
    every checkpoint (eval_every)."""
    n = max(lengths.n_edits, 1)
    if cfg.protocol == "single":
        return 1 + (n - 1) * lengths.locality_share
    if cfg.protocol == "sequential" and cfg.eval_every:
        checkpoints = math.ceil(n / cfg.eval_every)
        # On average half the edits are applied at a checkpoint before the last.
        return 1 + (checkpoints - 1) * (lengths.locality_share + (1 - lengths.locality_share) / 2)
    return 1.0


def _phase_seconds(flops: float, layer_passes: float, shape: ModelShape, device: Device, rate: float,
                   e: int) -> float:
    """Matrix work at the sustained rate, or reading each layer's weights per pass, whichever is slower; plus the
    fixed cost of launching a layer's kernels (what dominates small models)."""
    layer_bytes = shape.layer_params() * e
    return max(flops / rate, layer_passes * layer_bytes / device.bandwidth) + layer_passes * LAYER_PASS_SECONDS[device.kind]


def _time(cfg, shape, lengths, device: Device, precision: str, train: dict, world: int) -> tuple[dict, dict]:
    w = work(cfg, shape, lengths, device.kind)
    e = BYTES[precision]
    rate = device_flops(device, precision) * device.mfu
    fp64 = device_flops(device, "fp64") * device.mfu
    weights = shape.total_params() * e
    seconds = {
        "load": PROCESS_SECONDS + weights / LOAD_BYTES_PER_S,
        "edit": _phase_seconds(w["edit"] / world, w["edit_layer_passes"], shape, device, rate, e) + w["edit_fp64"] / fp64,
        "eval": _phase_seconds(w["eval"], w["eval_layer_passes"], shape, device, rate, e),
    }
    if w["stats"]:
        seconds["stats"] = _phase_seconds(w["stats"], w["stats_layer_passes"], shape, device, rate, e)
    return w, seconds


def device_flops(device: Device, precision: str) -> float:
    """Peak FLOP/s of device for precision ("fp64" for the solves)."""
    if device.kind == "cpu":
        per_core = CPU_GFLOPS_PER_CORE * 1e9
        return per_core * device.cpus / (4 if precision == "fp64" else (1 if precision == "fp32" else 2))
    key = {"fp32": "fp32_tflops", "bf16": "bf16_tflops", "fp16": "bf16_tflops", "fp64": "fp64_tflops"}[precision]
    return device.tflops[key] * 1e12
