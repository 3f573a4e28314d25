# Stage 2: train one language model per (variant, training length) listed in the config.
#
# The trainer checkpoints into a state directory that is NOT a declared output: Snakemake deletes a
# job's declared outputs before (re)running it, and the trainer must find its last checkpoint to
# resume after a kill. The state directory's name carries the hash of the training configuration,
# so a changed configuration never resumes from a stale run. When training ends, the script
# publishes checkpoint, metrics and compute curve atomically as the declared outputs.


def train_cfg(wildcards):
    """longnet.train's TrainConfig for one model: the config's training section plus the job."""
    spec = job_spec(wildcards)
    cfg = {key: value for key, value in config["training"].items() if key not in ("nproc", "threads")}
    cfg.update(attention=spec["variant"], attention_params=spec["params"],
               seq_len=spec["train_len"], seed=config["seed"], device=DEVICE, progress=False)
    return cfg


def train_launcher(wildcards, threads):
    """Plain python for one process; torchrun (DDP) for several, one per GPU or CPU slot."""
    nproc = config["training"]["nproc"]
    if nproc == 1:
        return PYTHON
    return f"{PYTHON} -m torch.distributed.run --standalone --nproc-per-node {nproc}"


rule train:
    input:
        manifest=rules.prepare_data.output.manifest,
    output:
        checkpoint=f"{WORK}/train/{{variant}}/L{{train_len}}/checkpoint.pt",
        metrics=f"{WORK}/train/{{variant}}/L{{train_len}}/metrics.csv",
        compute_curve=f"{WORK}/train/{{variant}}/L{{train_len}}/compute_curve.csv",
    params:
        cfg=lambda w: as_arg(train_cfg(w)),
        state_dir=lambda w: f"{model_dir(w)}/state-{config_hash(train_cfg(w))}",
        launcher=train_launcher,
        modules=as_arg(config["extra_modules"]),
        script=f"{workflow.basedir}/workflow/scripts/train_model.py",
    threads: config["training"]["nproc"] * config["training"]["threads"]
    resources:
        gpu=gpus(config["training"]["nproc"]),
    log:
        f"{LOGS}/train/{{variant}}_L{{train_len}}.log",
    shell:
        "{params.launcher} {params.script} --cfg {params.cfg} --threads {config[training][threads]}"
        " --modules {params.modules}"
        " --data-dir $(dirname {input.manifest}) --state-dir {params.state_dir}"
        " --out-dir $(dirname {output.checkpoint}) > {log} 2>&1"
