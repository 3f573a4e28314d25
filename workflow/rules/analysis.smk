# Stage 6: the attention-graph analysis per variant, then aggregation of every per-job CSV into
# tidy tables, the figures, the provenance of the run and results/README.md.
from analysis.figures import FIGURES
from analysis.tables import TABLES


rule attention_graph:
    output:
        work_pattern("attention_graph"),
    params:
        spec=lambda w: VARIANTS[w.variant],
        graph=config["attention_graph"],
        modules=config["extra_modules"],
    threads: job_threads("attention_graph")
    resources:
        **job_resources("attention_graph"),
    log:
        f"{LOGS}/attention_graph/{{variant}}.log",
    conda:
        ENV
    script:
        "../scripts/attention_graph.py"


# Every per-job CSV the tables are made from, by input kind (analysis.tables.INPUT_KINDS).
AGGREGATE_INPUTS = dict(
    profile=expand(work_pattern("profile"), variant=PROFILED),
    perplexity=trained_paths("perplexity"),
    context_window=trained_paths("context_window"),
    passkey=trained_paths("passkey") if PASSKEY else [],
    compute_curve=trained_paths("compute_curve"),
    metrics=trained_paths("metrics"),
    distributed=rules.project_latency.input.measured,
    projected=rules.project_latency.output,
    attention_graph=expand(work_pattern("attention_graph"), variant=list(VARIANTS)),
    recall=recall_paths(),
    recall_reach=recall_reach_paths(),
    recall_lr=recall_sweep_paths(),
)

# A missing intermediate is rebuilt (stamp_missing_intermediates, workflow/rules/common.smk):
# REBUILD_STAMP, an input of aggregate and tables, is touched at load when any of their inputs is
# missing, so both rerun, and with them the jobs that make what is missing.
REBUILD_STAMP = f"{WORK}/tables/rebuild.stamp"
STAGED_TABLES = {name: f"{WORK}/tables/{name}.csv" for name in TABLES}  # aggregate -> tables
if workflow.is_main_process:  # not again inside each job
    stamp_missing_intermediates(REBUILD_STAMP, AGGREGATE_INPUTS, f"{TABLE_DIR}/{TABLES[0]}.csv")


# The tables are built (and every input checked against the configuration) under the work
# directory first, then copied into results/tables: Snakemake deletes a job's outputs before it
# runs and after it fails, so a refused or failed aggregation leaves the previous tables alone.
rule aggregate:
    input:
        **AGGREGATE_INPUTS,
        stamp=REBUILD_STAMP,
    output:
        **STAGED_TABLES,
    params:
        variants=list(VARIANTS.values()),
        paper_len_scale=config["paper_len_scale"],
        expect=pipeline_config.expected_inputs(config, VARIANTS, list(RECALL_VARIANTS)),
        model_params=pipeline_config.model_params(config, VARIANTS),
        model_size_len=config.get("model_size", {}).get("train_len"),
    log:
        f"{LOGS}/analysis/aggregate.log",
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule tables:
    input:
        **STAGED_TABLES,
        stamp=REBUILD_STAMP,
    output:
        **{name: report(f"{TABLE_DIR}/{name}.csv", caption=f"../report/tables/{name}.rst",
                        category="Tables") for name in TABLES},
    log:
        f"{LOGS}/analysis/tables.log",
    conda:
        ENV
    script:
        "../scripts/publish_tables.py"


rule figures:
    input:
        **{name: f"{TABLE_DIR}/{name}.csv" for name in TABLES},
    output:
        **{name: report(f"{FIGURE_DIR}/{name}.png", caption=f"../report/figures/{name}.rst",
                        category="Figures") for name in FIGURES},
    log:
        f"{LOGS}/analysis/figures.log",
    conda:
        ENV
    script:
        "../scripts/draw_figures.py"


rule provenance:
    input:
        rules.tables.output,
    output:
        f"{RESULTS}/provenance.json",
    params:
        config=config,
        device=DEVICE,
    log:
        f"{LOGS}/analysis/provenance.log",
    conda:
        ENV
    script:
        "../scripts/write_provenance.py"


rule results_readme:
    input:
        **{name: f"{TABLE_DIR}/{name}.csv" for name in TABLES},
        figures=rules.figures.output,
    output:
        f"{RESULTS}/README.md",
    params:
        config_hash=config_hash(config),
    log:
        f"{LOGS}/analysis/results_readme.log",
    conda:
        ENV
    script:
        "../scripts/write_results_readme.py"
