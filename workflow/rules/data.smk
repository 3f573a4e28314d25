# Stage 1: tokenize the corpus once; every training and evaluation job reads it memory-mapped.
# prepare_corpus writes every file atomically and the manifest last, so the manifest's presence
# means the corpus is complete.

rule prepare_data:
    output:
        manifest=work_pattern("manifest"),
    params:
        data=config["data"],
    threads: job_threads("prepare_data")
    resources:
        **job_resources("prepare_data"),
    log:
        f"{LOGS}/prepare_data.log",
    conda:
        ENV
    script:
        "../scripts/prepare_data.py"
