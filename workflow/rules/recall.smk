# Stage 8 (beyond the paper): the trained long-range recall benchmark. One small model per
# (recall variant, seed) learns multi-query associative recall with the key-query distance
# controlled (longnet.recall); its accuracy at each configured distance is written beside the
# layers its attention pattern needs to reach that distance (analysis.attention_graph).
# Variants: config recall.variants; knobs named by flop_match are chosen at load time so the
# variant's attention FLOPs at recall.seq_len match LongNet's (pipeline_config.recall_variants).
# The learning rate: recall.lr, or, when it is a list, the one each variant's sweep (rule
# recall_lr: the first seed, scored on the validation split) gives the best accuracy.

rule recall_lr:
    output:
        work_pattern("recall_lr"),
    params:
        **RECALL_PARAMS,
        sweep_seed=SEEDS[0],
        sweep_steps=pipeline_config.recall_sweep_steps(config),
    wildcard_constraints:
        lr_index=r"\d+",
    threads: job_threads("recall")
    resources:
        **job_resources("recall"),
    log:
        f"{LOGS}/recall/{{recall_variant}}_lr{{lr_index}}.log",
    conda:
        ENV
    script:
        "../scripts/train_recall.py"


rule recall:
    input:
        sweep=lambda w: recall_sweep_paths(w.recall_variant),
    output:
        work_pattern("recall"),
    params:
        **RECALL_PARAMS,
    threads: job_threads("recall")
    resources:
        **job_resources("recall"),
    log:
        f"{LOGS}/recall/{{recall_variant}}_s{{seed}}.log",
    conda:
        ENV
    script:
        "../scripts/train_recall.py"


# The theory beside each trained result: which held-out placements the pattern connects at all
# within the model's depth (no training; one per recall variant, the placements are every seed's).
rule recall_reach:
    output:
        work_pattern("recall_reach"),
    params:
        **RECALL_PARAMS,
    log:
        f"{LOGS}/recall/{{recall_variant}}_reach.log",
    conda:
        ENV
    script:
        "../scripts/recall_reach.py"
