# Stage 2: train one language model per (variant, training length) listed in the config.
#
# The trainer checkpoints into a state directory that is NOT a declared output: Snakemake deletes a
# job's declared outputs before (re)running it, and the trainer must find its last checkpoint to
# resume after a kill. The state directory's name carries the hash of the training configuration,
# so a changed configuration never resumes from a stale run. When training ends, the script
# publishes checkpoint, metrics and compute curve atomically as the declared outputs.
# The hash (state_hash, common.smk) covers the run's identity and the data section.


rule train:
    input:
        manifest=rules.prepare_data.output.manifest,
    output:
        checkpoint=work_pattern("checkpoint"),
        metrics=work_pattern("metrics"),
        compute_curve=work_pattern("compute_curve"),
    params:
        cfg=lambda w: as_json(train_cfg(w)),
        state_dir=lambda w: f"{model_dir(w)}/state-{state_hash(w)}",
        data_dir=lambda w, input: os.path.dirname(input.manifest),
        out_dir=lambda w, output: os.path.dirname(output.checkpoint),
        launcher=TRAIN_LAUNCHER,
        modules=as_json(config["extra_modules"]),
        threads=lambda w, threads: max(1, threads // NPROC),  # per process, of what the job got
        script=f"{workflow.basedir}/workflow/scripts/train_model.py",
    threads: job_threads("train")  # torchrun's nproc x threads
    resources:
        **job_resources("train"),
    log:
        f"{LOGS}/train/{{variant}}_L{{train_len}}_s{{seed}}.log",
    conda:
        ENV
    shell:
        "{params.launcher:q} {params.script:q} --cfg {params.cfg:q} --threads {params.threads:q}"
        " --modules {params.modules:q}"
        " --data-dir {params.data_dir:q} --state-dir {params.state_dir:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
