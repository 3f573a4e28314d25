# Stage 4: latency, peak memory and FLOP/s of each variant's attention across sequence lengths
# (Figure 5, single device; Table 1's measured exponents). One job per variant, using every core
# so the timings are not shared with another job; cells past the time or memory cap are recorded
# as timeout / oom by the profiler and the sweep goes on.


rule profile:
    output:
        work_pattern("profile"),
    params:
        spec=lambda w: VARIANTS[w.variant],
        profile=config["profile"],
        device=DEVICE,
        modules=config["extra_modules"],
    threads: job_threads("profile")
    resources:
        **job_resources("profile"),
    log:
        f"{LOGS}/profile/{{variant}}.log",
    conda:
        ENV
    script:
        "../scripts/profile_attention.py"
