# Stage 5: LongNet's sequence-parallel attention over P ranks (paper section 3), launched with
# torchrun; then the cost model that projects per-device latency toward 1B tokens from the
# measured kernel throughput and an alpha-beta model of the all-gather (Figure 5, dashed).
# On CPU the ranks are gloo processes on this machine; on a cluster each P-rank job asks for P GPUs.


def world_seq_lens(wildcards):
    """Every configured length that P ranks can split evenly (load-time checks guarantee all)."""
    return " ".join(str(n) for n in config["distributed"]["seq_lens"])


rule sequence_parallel:
    output:
        f"{WORK}/distributed/P{{world_size}}.csv",
    params:
        dist=config["distributed"],
        seq_lens=world_seq_lens,
        tmp=lambda w, output: f"{output[0]}.tmp",
    threads: workflow.cores
    resources:
        gpu=lambda w: gpus(int(w.world_size)),
    log:
        f"{LOGS}/distributed/P{{world_size}}.log",
    shell:
        "OMP_NUM_THREADS={params.dist[threads_per_rank]} {PYTHON} -m torch.distributed.run"
        " --standalone --nproc-per-node {wildcards.world_size} -m longnet.sequence_parallel"
        " --seq-lens {params.seq_lens}"
        " --segment-lengths {params.dist[segment_lengths]}"
        " --dilation-rates {params.dist[dilation_rates]}"
        " --heads {params.dist[heads]} --head-dim {params.dist[head_dim]}"
        " --repeats {params.dist[repeats]} --backend {params.dist[backend]}"
        " --out {params.tmp} > {log} 2>&1 && mv {params.tmp} {output}"


rule project_latency:
    input:
        measured=expand(f"{WORK}/distributed/P{{world_size}}.csv",
                        world_size=config["distributed"]["world_sizes"]),
        profile=expand(f"{WORK}/profile/{{variant}}.csv", variant=PROFILED),
    output:
        f"{WORK}/distributed/projected.csv",
    params:
        cost_model=config["cost_model"],
        dist=config["distributed"],
    log:
        f"{LOGS}/distributed/projected.log",
    script:
        "../scripts/project_latency.py"
