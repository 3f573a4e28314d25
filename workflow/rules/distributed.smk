# Stage 5: LongNet's sequence-parallel attention over P ranks (paper section 3), launched with
# torchrun; then the cost model that projects per-device latency toward 1B tokens from the
# measured kernel throughput and an alpha-beta model of the all-gather (Figure 5, dashed).
# On CPU the ranks are gloo processes on this machine; on a cluster each P-rank job asks for P GPUs.


rule sequence_parallel:
    output:
        work_pattern("distributed"),
    params:
        python=PYTHON,
        script=f"{workflow.basedir}/benchmarks/sequence_parallel.py",
        lengths=SEQUENCE_PARALLEL_LENGTHS,
        segments=list(map(str, config["distributed"]["segment_lengths"])),
        dilations=list(map(str, config["distributed"]["dilation_rates"])),
        dist=config["distributed"],
        device=DEVICE,
    threads: job_threads("sequence_parallel")  # local: alone, so per-rank timings are not shared
    resources:
        **job_resources("sequence_parallel"),
    log:
        f"{LOGS}/distributed/P{{world_size}}.log",
    conda:
        ENV
    shell:
        "{params.python:q} -m torch.distributed.run --standalone"
        " --nproc-per-node {wildcards.world_size:q}"
        " {params.script:q} {params.lengths:q}"
        " --segment-lengths {params.segments:q} --dilation-rates {params.dilations:q}"
        " --heads {params.dist[heads]:q} --head-dim {params.dist[head_dim]:q}"
        " --mode {params.dist[mode]:q} --warmup {params.dist[warmup]:q}"
        " --repeats {params.dist[repeats]:q} --check-max-len {params.dist[check_max_len]:q}"
        " --threads {params.dist[threads_per_rank]:q} --device {params.device:q}"
        " --out {output:q} > {log:q} 2>&1"

rule project_latency:
    input:
        measured=expand(work_pattern("distributed"),
                        world_size=config["distributed"]["world_sizes"]),
        profile=expand(work_pattern("profile"), variant=PROFILED),
    output:
        work_pattern("projected"),
    params:
        cost_model=config["cost_model"],
        variants=list(VARIANTS.values()),
    log:
        f"{LOGS}/distributed/projected.log",
    conda:
        ENV
    script:
        "../scripts/project_latency.py"
