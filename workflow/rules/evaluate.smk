# Stage 3: evaluate every trained model: test perplexity at each evaluation length (Table 2), loss
# as the prompt grows (Figure 7 right) and, where the configuration has evaluation.passkey, passkey
# retrieval. One job per model loads the checkpoint once and writes the CSVs.


rule evaluate:
    input:
        checkpoint=rules.train.output.checkpoint,
        manifest=rules.prepare_data.output.manifest,
    output:
        perplexity=f"{WORK}/eval/{{variant}}/L{{train_len}}/s{{seed}}/perplexity.csv",
        context_window=f"{WORK}/eval/{{variant}}/L{{train_len}}/s{{seed}}/context_window.csv",
        **({"passkey": f"{WORK}/eval/{{variant}}/L{{train_len}}/s{{seed}}/passkey.csv"}
           if PASSKEY else {}),
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
