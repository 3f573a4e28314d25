# Stage 3: evaluate every trained model: test perplexity at each evaluation length (Table 2), loss
# as the prompt grows (Figure 7 right) and, where the configuration has evaluation.passkey, passkey
# retrieval. One job per model loads the checkpoint once and writes the CSVs.


rule evaluate:
    input:
        checkpoint=rules.train.output.checkpoint,
        manifest=rules.prepare_data.output.manifest,
    output:
        perplexity=work_pattern("perplexity"),
        context_window=work_pattern("context_window"),
        **({"passkey": work_pattern("passkey")} if PASSKEY else {}),
    params:
        evaluation=config["evaluation"],
        spec=job_spec,
        device=DEVICE,
        seed=config["seed"],
        modules=config["extra_modules"],
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    log:
        f"{LOGS}/evaluate/{{variant}}_L{{train_len}}_s{{seed}}.log",
    conda:
        ENV
    script:
        "../scripts/evaluate_model.py"
