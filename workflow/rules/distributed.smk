# Stage 5: LongNet's sequence-parallel attention over P ranks (paper section 3), launched with
# torchrun; then the cost model that projects per-device latency toward 1B tokens from the
# measured kernel throughput and an alpha-beta model of the all-gather (Figure 5, dashed).
# On CPU the ranks are gloo processes on this machine; on a cluster each P-rank job asks for P GPUs.


rule sequence_parallel:
    output:
        f"{WORK}/distributed/P{{world_size}}.csv",
    params:
        python=PYTHON,
        lengths=SEQUENCE_PARALLEL_LENGTHS,
        segments=" ".join(map(str, config["distributed"]["segment_lengths"])),
        dilations=" ".join(map(str, config["distributed"]["dilation_rates"])),
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
        "{params.python} -m torch.distributed.run --standalone"
        " --nproc-per-node {wildcards.world_size}"
        f" {workflow.basedir}/benchmarks/sequence_parallel.py {{params.lengths}}"
        " --segment-lengths {params.segments} --dilation-rates {params.dilations}"
        " --heads {params.dist[heads]} --head-dim {params.dist[head_dim]}"
        " --mode {params.dist[mode]} --warmup {params.dist[warmup]}"
        " --repeats {params.dist[repeats]} --check-max-len {params.dist[check_max_len]}"
        " --threads {params.dist[threads_per_rank]} --device {params.device} --out {output} > {log} 2>&1"


rule project_latency:
    input:
        measured=expand(f"{WORK}/distributed/P{{world_size}}.csv",
                        world_size=config["distributed"]["world_sizes"]),
        profile=expand(f"{WORK}/profile/{{variant}}.csv", variant=PROFILED),
    output:
        f"{WORK}/distributed/projected.csv",
    params:
        cost_model=config["cost_model"],
        variants=list(VARIANTS.values()),
    log:
        f"{LOGS}/distributed/projected.log",
    conda:
        ENV
    script:
        "../scripts/project_latency.py"
