# Stage 7: generation. Each trained model continues the start of the test split (results/samples/,
# so a reader sees what each model writes), and the decoding benchmark times one generated token
# per attention variant against the context length (benchmarks/bench_decode.py): per-token
# latency and cache bytes of one layer, and whole-model prefill / decode throughput.


# refused at load: a benchmarked variant the registry does not build at some configured shape
import baselines
from snakemake.exceptions import WorkflowError

for _i, _spec in enumerate(config["decode_benchmark"]["variants"]):
    for _shape in config["decode_benchmark"]["shapes"].values():
        try:
            baselines.build(_spec["name"], num_heads=_shape["heads"], **_spec.get("params", {}))
        except (TypeError, ValueError) as error:
            raise WorkflowError(f"config key 'decode_benchmark.variants[{_i}]': {error}") from None


rule samples:
    input:
        checkpoint=lambda w: f"{model_dir(w, SEEDS[0])}/checkpoint.pt",  # the first seed's model
        manifest=rules.prepare_data.output.manifest,
    output:
        f"{RESULTS}/samples/{{variant}}_L{{train_len}}.txt",
    params:
        samples=config["samples"],
        spec=job_spec,
        device=DEVICE,
        seed=config["seed"],
        modules=config["extra_modules"],
    threads: job_threads("samples")
    resources:
        **job_resources("samples"),
    log:
        f"{LOGS}/samples/{{variant}}_L{{train_len}}.log",
    conda:
        ENV
    script:
        "../scripts/generate_samples.py"


rule decode_benchmark:
    output:
        decode=f"{TABLE_DIR}/decode.csv",
        throughput=f"{TABLE_DIR}/decode_throughput.csv",
        figure=f"{FIGURE_DIR}/decode.png",
    params:
        bench=config["decode_benchmark"],
        model=config["training"]["model"],
        model_overrides=config["training"].get("model_overrides", {}),
        config=config,
        modules=config["extra_modules"],
    threads: job_threads("decode_benchmark")
    resources:
        **job_resources("decode_benchmark"),
    log:
        f"{LOGS}/decode_benchmark.log",
    conda:
        ENV
    script:
        "../scripts/bench_decode.py"
